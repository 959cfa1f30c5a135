"""Static checks both Slicer modules must pass, run without Slicer (one test per check, one case per module).

The .ui parses and matches the code (every ``self.ui.<name>`` exists, every button is used,
every SlicerParameterName is a parameter-node field of a type its widget can show, combo
boxes of enums list their members), custom widgets are declared and wired, the module
follows Slicer's scripted template, the sources use Python 3.9 grammar, and every core
name the module calls exists. Module-specific checks: test_slicer_unet_files.py and
test_slicer_training_files.py.
"""
from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, FrozenSet, Tuple

import pytest
from core_names import assert_core_names_exist

ROOT = Path(__file__).resolve().parents[1]

# which widget class can show which parameter type (Slicer's parameterNodeWrapper GUI connectors)
WIDGET_FOR_TYPE = {"bool": {"QCheckBox", "ctkCheckBox"}, "int": {"QSpinBox", "QSlider", "ctkSliderWidget"},
                   "str": {"QLineEdit", "QLabel", "QTextEdit"}, "choice": {"QComboBox", "ctkComboBox"},
                   "pathlib.Path": {"ctkPathLineEdit", "ctkDirectoryButton"}, "enum": {"QComboBox", "ctkComboBox"},
                   "node": {"qMRMLNodeComboBox"}}


@dataclass(frozen=True)
class Module:
    name: str
    script: str  # the module's script for batch or headless use, in Scripts/
    self_tests: FrozenSet[str]  # test methods its ScriptedLoadableModuleTest must have

    @property
    def py(self) -> Path:
        return ROOT / self.name / f"{self.name}.py"

    @property
    def ui(self) -> Path:
        return ROOT / self.name / "Resources" / "UI" / f"{self.name}.ui"

    @property
    def script_path(self) -> Path:
        return ROOT / self.name / "Scripts" / self.script


MODULES = [
    Module("SpineSegUNet", "segment_folder.py",
           frozenset({"setUp", "runTest", "test_SampleSegmentation", "test_FailureLeavesSceneUnchanged"})),
    Module("SpineSegTraining", "train.py",
           frozenset({"setUp", "runTest", "test_TrainOneEpochOnPhantoms", "test_BadDatasetFailsWithExitCode2"})),
]
module_cases = pytest.mark.parametrize("module", MODULES, ids=lambda m: m.name)


def _widgets(module: Module):
    root = ET.parse(module.ui).getroot()
    return root, {w.get("name"): w for w in root.iter("widget")}


def _parameter_fields(module: Module) -> Tuple[Dict[str, str], Dict[str, int]]:
    """name -> annotation source of the @parameterNodeWrapper class, and the enum classes' member counts."""
    fields, enums = {}, {}
    for node in ast.parse(module.py.read_text()).body:
        if isinstance(node, ast.ClassDef):
            if "enum.Enum" in [ast.unparse(b) for b in node.bases]:
                enums[node.name] = sum(isinstance(s, ast.Assign) for s in node.body)
            if any(ast.unparse(d) == "parameterNodeWrapper" for d in node.decorator_list):
                fields.update({s.target.id: ast.unparse(s.annotation) for s in node.body
                               if isinstance(s, ast.AnnAssign)})
    return fields, enums


def _base_type(annotation: str) -> str:
    return re.sub(r"^Annotated\[([\w.]+),.*\]$", r"\1", annotation)


def _kind(annotation: str, enums) -> str:
    if annotation.startswith("Annotated[") and "Choice(" in annotation:
        return "choice"
    base = _base_type(annotation)
    if base in enums:
        return "enum"
    return "node" if base.startswith("vtkMRML") else base


@module_cases
def test_ui_parses_and_names_are_unique(module):
    root, _ = _widgets(module)
    assert root.tag == "ui" and root.find("widget").get("class") == "qMRMLWidget"
    names = [w.get("name") for w in root.iter("widget")]
    assert len(names) == len(set(names))


@module_cases
def test_every_ui_widget_the_code_uses_exists_and_every_button_is_used(module):
    _, widgets = _widgets(module)
    used = set(re.findall(r"self\.ui\.(\w+)", module.py.read_text()))
    assert used, "the module uses no widgets?"
    assert used <= set(widgets), f"widgets used in {module.py.name} but absent from the .ui: {sorted(used - set(widgets))}"
    buttons = {n for n, w in widgets.items() if w.get("class") == "QPushButton"}
    assert buttons <= used, f"buttons that do nothing: {sorted(buttons - used)}"


@module_cases
def test_parameter_bindings_match_the_parameter_node(module):
    _, widgets = _widgets(module)
    fields, enums = _parameter_fields(module)
    assert fields, "no @parameterNodeWrapper class found"
    bound = {}
    for w in widgets.values():
        for prop in w.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                assert prop.get("stdset") == "0", w.get("name")
                bound[prop.findtext("string")] = w
    assert set(bound) == set(fields), f"ui bindings {sorted(bound)} vs parameter fields {sorted(fields)}"
    for field, widget in bound.items():
        kind = _kind(fields[field], enums)
        assert widget.get("class") in WIDGET_FOR_TYPE[kind], (field, fields[field], widget.get("class"))
        if kind == "enum":  # the connector refills the combo box; the .ui items mirror the members for Designer
            assert len(widget.findall("item")) == enums[_base_type(fields[field])], field


@module_cases
def test_custom_widgets_declared_and_connections_valid(module):
    root, widgets = _widgets(module)
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used = {w.get("class") for w in root.iter("widget")}
    slicer_classes = {c for c in used if c.startswith(("qMRML", "ctk"))}
    assert slicer_classes <= declared, slicer_classes - declared
    for conn in root.iter("connection"):
        assert conn.findtext("sender") in widgets and conn.findtext("receiver") in widgets
    mrml = {n for n, w in widgets.items() if w.get("class") in ("qMRMLNodeComboBox", "qMRMLTableView")}
    receivers = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    assert mrml <= receivers, f"MRML widgets that never get the scene: {sorted(mrml - receivers)}"


@module_cases
def test_module_classes_follow_the_scripted_template(module):
    classes = {n.name: n for n in ast.parse(module.py.read_text()).body if isinstance(n, ast.ClassDef)}
    expected = {module.name: "ScriptedLoadableModule", f"{module.name}Widget": "ScriptedLoadableModuleWidget",
                f"{module.name}Logic": "ScriptedLoadableModuleLogic", f"{module.name}Test": "ScriptedLoadableModuleTest"}
    for name, base in expected.items():
        assert name in classes and base in [ast.unparse(b) for b in classes[name].bases], name
    assert "VTKObservationMixin" in [ast.unparse(b) for b in classes[f"{module.name}Widget"].bases]
    methods = {n.name for n in classes[f"{module.name}Test"].body if isinstance(n, ast.FunctionDef)}
    assert module.self_tests <= methods, module.self_tests - methods


@module_cases
def test_core_names_the_module_uses_exist(module):
    """Every ``<core module>.X`` the module and its script call is defined in the core."""
    assert_core_names_exist(module.py.read_text() + module.script_path.read_text())


SOURCES_39 = [p for m in MODULES for p in (m.py, m.script_path)] + sorted((ROOT / "spineseg").rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES_39, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_python39_grammar(path):
    """Slicer 5.x bundles newer Pythons, but the core also serves Python 3.9 installs."""
    source = path.read_text()
    tree = ast.parse(source, feature_version=(3, 9))
    if "from __future__ import annotations" in source:
        return
    # without the future import, annotations are evaluated: no "X | Y" on Python 3.9
    for node in ast.walk(tree):
        ann = getattr(node, "annotation", None) or getattr(node, "returns", None)
        if ann is not None:
            assert not any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr) for n in ast.walk(ann)), \
                f"{path.name}:{node.lineno}: 'X | Y' annotation fails on Python 3.9"
