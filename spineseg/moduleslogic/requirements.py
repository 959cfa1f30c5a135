"""The Python packages each backend needs, and installing them into Slicer's Python.

Both Slicer modules install through :func:`ensure_requirements`, handing it Slicer's
``slicer.util`` (dialogs and ``pip_install``) and, when the PyTorch extension is
there, its torch installer: this module never imports Slicer, so the whole
decision (what to ask, what to install how, when a restart is needed) is tested here.
"""
from __future__ import annotations

import importlib.util
import logging
import sys
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence

from spineseg.inference.backends import BACKENDS


@dataclass(frozen=True)
class Requirement:
    """A Python package the core needs: ``module`` to import, ``pip`` spec to install it,
    ``via_pytorch_utils`` when the PyTorch extension should install it (torch builds depend on the GPU)."""

    module: str
    pip: str
    via_pytorch_utils: bool = False


CORE_REQUIREMENTS = (Requirement("numpy", "numpy>=1.22"), Requirement("SimpleITK", "SimpleITK>=2.2"),
                     Requirement("safetensors", "safetensors>=0.4"))
BACKEND_REQUIREMENTS = {
    "onnx": (Requirement("onnxruntime", "onnxruntime>=1.16"),),
    "torch": (Requirement("torch", "torch>=2.1", via_pytorch_utils=True), Requirement("monai", "monai>=1.3")),
}
#: what ``segment --levels`` needs beyond the backend (the ``levels`` extra): the .seg.nrrd writer
LEVELS_REQUIREMENTS = (Requirement("slicerio", "slicerio>=1.4"),)

#: installs PyTorch through the PyTorch extension: ``(version requirement, e.g. ">=2.1") -> installed?``
TorchInstaller = Callable[[str], bool]


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_requirements(backend: str, *, levels: bool = False,
                         importable: Callable[[str], bool] = _importable) -> List[Requirement]:
    """The packages the chosen backend (and the per-level read-out, with ``levels``) needs that this
    Python cannot import (found without importing them)."""
    if backend not in BACKEND_REQUIREMENTS:
        raise ValueError(f"backend {backend!r}: use {' or '.join(BACKENDS)}")
    wanted = (*CORE_REQUIREMENTS, *BACKEND_REQUIREMENTS[backend], *(LEVELS_REQUIREMENTS if levels else ()))
    return [r for r in wanted if not importable(r.module)]


def restart_needed(installed: Sequence[Requirement], loaded_modules: Optional[Sequence[str]] = None) -> bool:
    """True when a package just installed was already imported in this process (the new version
    only takes effect after a restart). The segmentation itself runs in a fresh process, so
    newly installed packages work there without a restart."""
    loaded = set(sys.modules if loaded_modules is None else loaded_modules)
    return any(r.module in loaded for r in installed)


def ensure_requirements(backend: str, util: Any, *, title: str, install_torch: Optional[TorchInstaller] = None,
                        interactive: bool = True, levels: bool = False,
                        importable: Callable[[str], bool] = _importable) -> bool:
    """Offer to install what ``backend`` (and, with ``levels``, the per-level read-out) needs; never
    installs without a confirmation.

    ``util`` is ``slicer.util`` (``confirmOkCancelDisplay``, ``errorDisplay``,
    ``confirmYesNoDisplay``, ``tryWithErrorDisplay``, ``pip_install``, ``restart``);
    ``install_torch`` is the PyTorch extension's installer, None without that extension.
    ``title`` names the asking module. Headless (``interactive=False``) it only logs what
    is missing. Returns True when everything is importable now.
    """
    missing = missing_requirements(backend, levels=levels, importable=importable)
    if not missing:
        return True
    names = ", ".join(r.module for r in missing)
    if not interactive:
        logging.error(f"{title} needs these Python packages for the {backend} backend: {names}. "
                      "Install them from the module panel or with slicer.util.pip_install.")
        return False
    via_torch = [r for r in missing if r.via_pytorch_utils]
    if via_torch and install_torch is None:
        util.errorDisplay(
            "The PyTorch backend needs PyTorch. Install the PyTorch extension from the Extensions Manager "
            "(it picks the build that fits your GPU), restart Slicer, then try again; or choose the "
            "ONNX Runtime backend under Advanced.", windowTitle=title)
        return False
    if not util.confirmOkCancelDisplay(
            f"{title} needs these Python packages: {names}.\n\nDownload and install them now? "
            "This needs an internet connection and may take a few minutes.",
            windowTitle=f"{title}: install dependencies"):
        return False
    loaded_before = list(sys.modules)  # to tell whether an installed package was already imported
    try:
        with util.tryWithErrorDisplay("Installing Python packages failed.", waitCursor=True):
            if via_torch:
                spec = via_torch[0].pip  # e.g. "torch>=2.1": the installer wants the ">=2.1" part
                if not install_torch(spec[len(via_torch[0].module):]):  # type: ignore[misc]
                    return False
            pip_specs = [r.pip for r in missing if not r.via_pytorch_utils]
            if pip_specs:
                util.pip_install(pip_specs)
    except Exception:  # already shown to the user by tryWithErrorDisplay
        logging.exception(f"{title}: installing Python packages failed")
        return False
    if restart_needed(missing, loaded_before):
        if util.confirmYesNoDisplay(
                "The packages were installed, but Slicer had already loaded an older version of some of "
                "them. Restart Slicer now to use the new ones?", windowTitle=title):
            util.restart()
        return False
    return not missing_requirements(backend, levels=levels, importable=importable)
