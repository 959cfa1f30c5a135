"""The models the Slicer modules offer: the bundled one and those SpineSeg Training registered.

Registered model folders are kept in one application setting (QSettings) that
SpineSeg Training's "Use this model" extends and SpineSeg UNet's model folder
history reads. Headers are read with :func:`spineseg.modelfile.read_header`, the
same parser the core uses.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from spineseg.errors import InputError
from spineseg.modelfile import HEADER_FILE, default_model_path, read_header

#: Application setting (QSettings) listing the model folders that SpineSeg Training's
#: "Use this model" registered; SpineSeg UNet offers them in its model folder history.
USER_MODELS_KEY = "SpineSeg/UserModels"


def _setting_list(value: Any) -> List[str]:
    """QSettings hands back None, one string or a list, depending on what was stored."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    return [str(v) for v in value if v]


#: how many entries of its history list ctkPathLineEdit (SpineSeg UNet's model folder) offers: the first ones
PATH_HISTORY_SHOWN = 5


def add_user_model(current: Any, model_dir: Union[str, "os.PathLike[str]"]) -> List[str]:
    """The ``SpineSeg/UserModels`` list with ``model_dir`` added (absolute, no duplicates, **newest first**).

    Newest first because the model folder's ctkPathLineEdit offers only the first
    :data:`PATH_HISTORY_SHOWN` entries of this list: appended last, a new model was not offered.
    """
    new = str(Path(model_dir).resolve())
    return [new] + [p for p in _setting_list(current) if str(Path(p).resolve()) != new]


def user_model_dirs(value: Any) -> List[Path]:
    """The registered model folders that still hold a model, newest first (the stored order)."""
    return [Path(p) for p in _setting_list(value) if (Path(p) / HEADER_FILE).is_file()]


def bundled_model_dir() -> Optional[Path]:
    """The bundled default model folder, or None when this installation ships none."""
    return default_model_path()


def is_model_dir(path: Optional[Path]) -> bool:
    """True when ``path`` holds a valid SpineSeg model header."""
    if path is None:
        return False
    try:
        read_header(path)
    except InputError:
        return False
    return True


def model_summary(path: Optional[Path]) -> str:
    """A short description of a model folder for the panel, or the reason it cannot be used.

    Reads only the header (the core checks the weights when it loads them).
    """
    if path is None or str(path) in ("", "."):
        return "No model folder chosen."
    path = Path(path)
    if not (path / HEADER_FILE).is_file():
        return f"{path} is not a SpineSeg model folder (no {HEADER_FILE})."
    try:
        header = read_header(path)
    except InputError as exc:
        return str(exc)
    names = ", ".join(c.name for c in header.classes)
    onnx = " + ONNX" if header.onnx else ""
    return f"{header.name} ({header.architecture.name}{onnx}): {names or 'no classes'}"


def result_classes(done: Optional[Dict[str, Any]], model_dir: Optional[Path] = None) -> List[Dict[str, Any]]:
    """The classes of a finished segmentation: from the done event's first output, else from the
    header of ``model_dir``. Raises ValueError when neither names any class."""
    outputs = (done or {}).get("outputs") or []
    if outputs and isinstance(outputs[0], dict) and outputs[0].get("classes"):
        return list(outputs[0]["classes"])
    if model_dir is not None and (Path(model_dir) / HEADER_FILE).is_file():
        return [c.to_dict() for c in read_header(model_dir).classes]
    raise ValueError("the segmentation result names no classes (neither the done event nor model.json)")
