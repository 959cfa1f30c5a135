"""Minimal stand-ins for Slicer's Python modules, shared by the tests that import the two modules.

Slicer cannot be installed here. These are just enough to execute a scripted module's top
level (so a NameError or a bad import there shows up) and to call its plain-Python Logic.
Everything that touches MRML (the segment path, the batch script, curves, parameter nodes, the
modules' self-tests) runs against real slicer-core in Testing/ instead; see Testing/README.md.
"""
from __future__ import annotations

import importlib.util
import sys
import types
import unittest
from pathlib import Path
from types import ModuleType, SimpleNamespace


class _Base:
    def __init__(self, *args, **kwargs):
        pass


def load_with_stand_in_slicer(monkeypatch, module_py: Path, name: str, **slicer_attributes) -> ModuleType:
    """Install the stand-ins in ``sys.modules`` (undone by ``monkeypatch``) and import ``module_py``.

    ``slicer_attributes`` are set on the stand-in ``slicer`` package (``app``, node classes, ...).
    """
    slicer = types.ModuleType("slicer")
    slicer.__path__ = []  # a package, so "from slicer.util import ..." works
    slicer.modules = SimpleNamespace()  # no other module loaded (no PyTorch extension)
    for key, value in slicer_attributes.items():
        setattr(slicer, key, value)
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    slm = types.ModuleType("slicer.ScriptedLoadableModule")
    for cls in ("ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic"):
        setattr(slm, cls, type(cls, (_Base,), {}))
    slm.ScriptedLoadableModuleTest = unittest.TestCase
    util = types.ModuleType("slicer.util")
    util.VTKObservationMixin = type("VTKObservationMixin", (_Base,), {})
    pnw = types.ModuleType("slicer.parameterNodeWrapper")
    pnw.parameterNodeWrapper = lambda cls: cls
    pnw.WithinRange = lambda low, high: ("WithinRange", low, high)
    pnw.Choice = lambda choices: ("Choice", tuple(choices))
    slicer.i18n, slicer.ScriptedLoadableModule, slicer.util, slicer.parameterNodeWrapper = i18n, slm, util, pnw
    vtk = types.ModuleType("vtk")
    vtk.vtkCommand = SimpleNamespace(ModifiedEvent=33)
    for key, mod in {"slicer": slicer, "slicer.i18n": i18n, "slicer.ScriptedLoadableModule": slm,
                     "slicer.util": util, "slicer.parameterNodeWrapper": pnw, "vtk": vtk,
                     "qt": types.ModuleType("qt")}.items():
        monkeypatch.setitem(sys.modules, key, mod)
    spec = importlib.util.spec_from_file_location(name, module_py)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
