"""The only stand-ins of the slicer-core tier: what Slicer has and the ``slicer-core`` wheel lacks.

Everything MRML is real (scene, nodes, storage, vtkSegmentationCore, the module logics, Slicer's
own ``slicer/util.py``). Stood in here, and nowhere else:

- Slicer's pure-Python layer, which is not in the wheel: ``slicer.ScriptedLoadableModule``,
  ``slicer.parameterNodeWrapper`` (scalar, enum, path and node parameters only) and ``slicer.i18n``.
- The Qt side: ``qt`` and ``ctk`` (empty modules plus the message-box constants that
  ``slicer.util.errorDisplay`` reads), ``slicer.app`` (temporary folder, settings, testing mode,
  ``startupCompleted()`` connections) and ``slicer.modules`` (each module's ``logic()`` returns
  the real logic the harness created).

``sitkUtils`` is not stood in: the modules convert volumes with ``slicer.util`` and MRML calls.
Behaviour follows Slicer's source (Base/Python/slicer/ScriptedLoadableModule.py,
parameterNodeWrapper/serializers.py, i18n.py); see Testing/README.md for the checked facts.
"""
from __future__ import annotations

import enum
import logging
import os
import pathlib
import sys
import types
import typing
import unittest
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional

# -- slicer.i18n ---------------------------------------------------------------------------------


def _i18n() -> types.ModuleType:
    """Slicer's tr/translate look the text up in Qt's translator; with no translation loaded they
    return the source text, which is what these do."""
    module = types.ModuleType("slicer.i18n")
    module.tr = lambda text: text
    module.translate = lambda context, text: text
    return module


# -- slicer.ScriptedLoadableModule ---------------------------------------------------------------


class ScriptedLoadableModule:
    """Keeps ``parent`` (the module's description object); ``resourcePath`` is ``<module dir>/Resources``."""

    def __init__(self, parent) -> None:
        self.parent = parent
        self.moduleName = self.__class__.__name__

    def resourcePath(self, filename: str) -> str:
        return os.path.join(os.path.dirname(self.parent.path), "Resources", filename)


class ScriptedLoadableModuleWidget:
    """Qt widgets are not available in this tier: constructing a module widget is an error."""

    def __init__(self, parent=None) -> None:
        raise NotImplementedError("module widgets need Qt; the slicer-core tier tests logic, scripts and tests")


class ScriptedLoadableModuleLogic:
    """As Slicer's: module name from the class name, one singleton vtkMRMLScriptedModuleNode per module."""

    def __init__(self, parent=None) -> None:
        self.moduleName = self.__class__.__name__
        if self.moduleName.endswith("Logic"):
            self.moduleName = self.moduleName[: -len("Logic")]
        self.isSingletonParameterNode = True

    def getParameterNode(self):
        import slicer

        scene = slicer.mrmlScene
        if self.isSingletonParameterNode:
            node = scene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if node:
                if node.GetAttribute("ModuleName") != self.moduleName:
                    node.SetAttribute("ModuleName", self.moduleName)
                return node
        else:
            for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode")):
                node = scene.GetNthNodeByClass(i, "vtkMRMLScriptedModuleNode")
                if node.GetAttribute("ModuleName") == self.moduleName:
                    return node
        return scene.AddNode(self.createParameterNode())

    def createParameterNode(self):
        import slicer

        node = slicer.vtkMRMLScriptedModuleNode()
        if self.isSingletonParameterNode:
            node.SetSingletonTag(self.moduleName)
        node.SetAttribute("ModuleName", self.moduleName)
        node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    """``delayDisplay`` logs (Slicer's shows a dialog); ``runTest`` as the subclass defines it."""

    def delayDisplay(self, message, requestedDelay=None, msec=None) -> None:
        logging.info(message)

    def runTest(self) -> None:  # pragma: no cover - every SpineSeg test class overrides it
        raise NotImplementedError


def _scripted_loadable_module() -> types.ModuleType:
    module = types.ModuleType("slicer.ScriptedLoadableModule")
    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic,
                ScriptedLoadableModuleTest):
        setattr(module, cls.__name__, cls)
    return module


# -- slicer.parameterNodeWrapper -----------------------------------------------------------------


class WithinRange:
    """Validator: a number in [minimum, maximum] (Slicer raises ValueError otherwise)."""

    def __init__(self, minimum, maximum) -> None:
        self.minimum, self.maximum = minimum, maximum

    def validate(self, value) -> None:
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"value {value} is not within [{self.minimum}, {self.maximum}]")


class Choice:
    """Validator: one of the given values (Slicer raises ValueError otherwise)."""

    def __init__(self, choices) -> None:
        self.choices = tuple(choices)

    def validate(self, value) -> None:
        if value not in self.choices:
            raise ValueError(f"value {value!r} is not one of {self.choices}")


def _serializer(kind: type):
    """(write, read, default) on a vtkMRMLScriptedModuleNode, in the formats Slicer's serializers use:
    numbers and paths as str(), bool as "True"/"False", enums by member name, nodes as a node
    reference (plus an empty parameter of the same name)."""
    import slicer

    if isinstance(kind, type) and issubclass(kind, slicer.vtkMRMLNode):
        def write(node, name, value):
            node.SetParameter(name, "")
            node.SetNodeReferenceID(name, value.GetID() if value is not None else None)
        return write, lambda node, name: node.GetNodeReference(name), None
    if kind is bool:
        return (lambda node, name, value: node.SetParameter(name, "True" if value else "False"),
                lambda node, name: node.GetParameter(name) == "True", False)
    if kind in (int, float):
        return (lambda node, name, value: node.SetParameter(name, str(value)),
                lambda node, name: kind(node.GetParameter(name)), 0)
    if kind is str:
        return (lambda node, name, value: node.SetParameter(name, str(value)),
                lambda node, name: node.GetParameter(name), "")
    if kind in (pathlib.Path, pathlib.PosixPath, pathlib.PurePath):
        return (lambda node, name, value: node.SetParameter(name, str(value)),
                lambda node, name: kind(node.GetParameter(name)), kind())
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return (lambda node, name, value: node.SetParameter(name, value.name),
                lambda node, name: kind[node.GetParameter(name)], next(iter(kind)))
    raise TypeError(f"parameter type {kind!r} is not stood in (scalars, str, Path, Enum, MRML nodes only)")


def parameterNodeWrapper(cls):
    """Class decorator: each annotated field becomes a property stored in the wrapped parameter node.

    Defaults are written into the node when it lacks the parameter, as Slicer's wrapper does.
    ``connectGui``/``disconnectGui`` (Qt) are not stood in.
    """
    hints = typing.get_type_hints(cls, include_extras=True)
    fields: Dict[str, tuple] = {}
    for name, hint in hints.items():
        kind, validators = hint, []
        if typing.get_origin(hint) is typing.Annotated:
            kind, *validators = typing.get_args(hint)
        write, read, default = _serializer(kind)
        default = cls.__dict__.get(name, default)
        fields[name] = (write, read, default, validators)

    def __init__(self, parameterNode) -> None:
        self.parameterNode = parameterNode
        for name, (write, _read, default, _validators) in fields.items():
            if not parameterNode.HasParameter(name):
                write(parameterNode, name, default)

    def make_property(name):
        write, read, _default, validators = fields[name]

        def getter(self):
            return read(self.parameterNode, name)

        def setter(self, value):
            for validator in validators:
                validator.validate(value)
            write(self.parameterNode, name, value)
        return property(getter, setter)

    namespace = {"__init__": __init__, "__doc__": cls.__doc__, "_fields": tuple(fields)}
    for name in fields:
        namespace[name] = make_property(name)
    return type(cls.__name__, (), namespace)


def _parameter_node_wrapper() -> types.ModuleType:
    module = types.ModuleType("slicer.parameterNodeWrapper")
    module.parameterNodeWrapper = parameterNodeWrapper
    module.WithinRange = WithinRange
    module.Choice = Choice
    return module


# -- Qt side: qt, ctk, slicer.app, slicer.modules ------------------------------------------------


class Settings:
    """QSettings' value/setValue on a dict (what the modules store: lists of strings)."""

    def __init__(self) -> None:
        self.values: Dict[str, Any] = {}

    def value(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def setValue(self, key: str, value: Any) -> None:
        self.values[key] = value

    def contains(self, key: str) -> bool:
        return key in self.values

    def remove(self, key: str) -> None:
        self.values.pop(key, None)

    def sync(self) -> None:
        pass


class Application:
    """The few ``slicer.app`` members the modules' logic, scripts and tests use."""

    applicationName = "Slicer"

    def __init__(self, temporary_path: str, application_logic) -> None:
        self.temporaryPath = temporary_path
        self._settings = Settings()
        self._application_logic = application_logic
        self._startup: List[Callable[[], None]] = []
        self.exit_codes: List[int] = []

    def userSettings(self) -> Settings:
        return self._settings

    def settings(self) -> Settings:
        return self._settings

    def testingEnabled(self) -> bool:
        return True  # slicer.util's message boxes then log and return their testing value

    def applicationLogic(self):
        return self._application_logic

    def processEvents(self) -> None:
        pass

    def connect(self, signal: str, slot: Callable[[], None]) -> None:
        if signal != "startupCompleted()":
            raise NotImplementedError(f"signal {signal} is not stood in")
        self._startup.append(slot)

    def completeStartup(self) -> None:
        """What Slicer does once every module is loaded: emit startupCompleted()."""
        while self._startup:
            self._startup.pop(0)()

    def exit(self, code: int = 0) -> None:
        self.exit_codes.append(int(code))

    def commandOptions(self):
        return SimpleNamespace(runPythonAndExit=False)


class ModuleHandle:
    """``slicer.modules.<name>``: ``logic()`` is the real module logic."""

    def __init__(self, logic) -> None:
        self._logic = logic

    def logic(self):
        return self._logic


def _qt() -> types.ModuleType:
    module = types.ModuleType("qt")
    # slicer.util.errorDisplay / confirm*Display read these before testing mode returns
    module.QMessageBox = SimpleNamespace(Ok=0x400, Cancel=0x400000, Yes=0x4000, No=0x10000, Critical=3,
                                         Question=4, Warning=2, Information=1)
    return module


def install(slicer_module, *, scene, application_logic, logics: Dict[str, Any], temporary_path: str,
            monkeypatch) -> Application:
    """Put the stand-ins in ``sys.modules`` and on the real ``slicer`` package (undone by ``monkeypatch``)."""
    app = Application(temporary_path, application_logic)
    stand_ins = {
        "slicer.i18n": _i18n(),
        "slicer.ScriptedLoadableModule": _scripted_loadable_module(),
        "slicer.parameterNodeWrapper": _parameter_node_wrapper(),
        "qt": _qt(),
        "ctk": types.ModuleType("ctk"),
    }
    for name, module in stand_ins.items():
        monkeypatch.setitem(sys.modules, name, module)
        if name.startswith("slicer."):
            monkeypatch.setattr(slicer_module, name.split(".", 1)[1], module, raising=False)
    monkeypatch.setattr(slicer_module, "app", app, raising=False)
    monkeypatch.setattr(slicer_module, "mrmlScene", scene, raising=False)
    monkeypatch.setattr(slicer_module, "modules",
                        SimpleNamespace(**{k: ModuleHandle(v) for k, v in logics.items()}), raising=False)
    return app


__all__ = ["Application", "Choice", "ModuleHandle", "ScriptedLoadableModule", "ScriptedLoadableModuleLogic",
           "ScriptedLoadableModuleTest", "ScriptedLoadableModuleWidget", "Settings", "WithinRange", "install",
           "parameterNodeWrapper"]
