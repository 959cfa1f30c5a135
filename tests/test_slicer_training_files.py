"""Static checks of the SpineSeg Training Slicer module that run without Slicer.

The .ui parses and matches the code (every ``self.ui.<name>`` exists, every
SlicerParameterName is a parameter-node field of a type its widget can show), the
module's CMake lists name exactly the files that exist, the sources use Python 3.9
grammar, the module follows Slicer's scripted template, and the headless script
runs (outside Slicer too) with the documented exit codes.
"""
from __future__ import annotations

import ast
import re
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from core_names import assert_core_names_exist

from spineseg.networks import network_names
from spineseg.training.presets import PRESETS

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "SpineSegTraining"
MODULE_PY = MODULE_DIR / "SpineSegTraining.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "SpineSegTraining.ui"
HEADLESS = MODULE_DIR / "Scripts" / "train.py"

# which widget class can show which parameter type (Slicer's parameterNodeWrapper GUI connectors)
WIDGET_FOR_TYPE = {"bool": {"QCheckBox", "ctkCheckBox"}, "int": {"QSpinBox", "QSlider", "ctkSliderWidget"},
                   "str": {"QLineEdit", "QLabel", "QTextEdit"}, "choice": {"QComboBox", "ctkComboBox"},
                   "pathlib.Path": {"ctkPathLineEdit", "ctkDirectoryButton"}, "enum": {"QComboBox", "ctkComboBox"}}


def _widgets():
    root = ET.parse(UI_FILE).getroot()
    return root, {w.get("name"): w for w in root.iter("widget")}


def _module_tree():
    return ast.parse(MODULE_PY.read_text())


def _parameter_fields():
    fields, enums = {}, set()
    for node in _module_tree().body:
        if isinstance(node, ast.ClassDef):
            if "enum.Enum" in [ast.unparse(b) for b in node.bases]:
                enums.add(node.name)
            if any(ast.unparse(d) == "parameterNodeWrapper" for d in node.decorator_list):
                fields.update({s.target.id: ast.unparse(s.annotation) for s in node.body
                               if isinstance(s, ast.AnnAssign)})
    return fields, enums


def _kind(annotation: str, enums) -> str:
    if annotation.startswith("Annotated[") and "Choice(" in annotation:
        return "choice"
    base = re.sub(r"^Annotated\[([\w.]+),.*\]$", r"\1", annotation)
    return "enum" if base in enums else base


def test_ui_parses_with_unique_names():
    root, widgets = _widgets()
    names = [w.get("name") for w in root.iter("widget")]
    assert len(names) == len(set(names))
    assert root.find("widget").get("class") == "qMRMLWidget"


def test_every_ui_widget_the_code_uses_exists():
    _, widgets = _widgets()
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_PY.read_text()))
    assert used, "the module uses no widget?"
    assert used <= set(widgets), used - set(widgets)
    # every button in the panel does something
    buttons = {n for n, w in widgets.items() if w.get("class") == "QPushButton"}
    assert buttons <= used, buttons - used


def test_parameter_bindings_match_the_parameter_node():
    _, widgets = _widgets()
    fields, enums = _parameter_fields()
    bound = {}
    for name, w in widgets.items():
        for prop in w.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.findtext("string")] = w.get("class")
    assert set(bound) == set(fields), (set(bound) ^ set(fields))
    for param, cls in bound.items():
        kind = _kind(fields[param], enums)
        assert cls in WIDGET_FOR_TYPE[kind], f"{param}: {cls} cannot show {fields[param]}"


def test_combo_items_match_parameter_labels():
    """Designer shows these items; at run time the parameterNodeWrapper refills them with the same texts."""
    _, widgets = _widgets()

    def items(name):
        return [i.findtext("property/string") for i in widgets[name].findall("item")]

    assert items("architectureComboBox") == list(network_names())
    assert len(items("presetComboBox")) == len(PRESETS)
    assert len(items("deviceComboBox")) == 3


def test_custom_widgets_declared():
    root, _ = _widgets()
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used = {w.get("class") for w in root.iter("widget")}
    assert {c for c in used if c.startswith(("qMRML", "ctk"))} <= declared


def test_icon_is_a_128_png():
    data = (MODULE_DIR / "Resources" / "Icons" / "SpineSegTraining.png").read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == (128, 128)


@pytest.mark.parametrize("path", [MODULE_PY, HEADLESS],
                         ids=lambda p: p.name)
def test_python39_grammar(path):
    source = path.read_text()
    tree = ast.parse(source, feature_version=(3, 9))
    if "from __future__ import annotations" in source:
        return
    for node in ast.walk(tree):  # evaluated annotations: no "X | Y" on Python 3.9
        ann = getattr(node, "annotation", None) or getattr(node, "returns", None)
        if ann is not None:
            assert not any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr) for n in ast.walk(ann)), \
                f"{path.name}:{node.lineno}"


def test_module_classes_follow_the_scripted_template():
    classes = {n.name: n for n in _module_tree().body if isinstance(n, ast.ClassDef)}
    expected = {"SpineSegTraining": "ScriptedLoadableModule", "SpineSegTrainingWidget": "ScriptedLoadableModuleWidget",
                "SpineSegTrainingLogic": "ScriptedLoadableModuleLogic",
                "SpineSegTrainingTest": "ScriptedLoadableModuleTest"}
    for name, base in expected.items():
        assert name in classes and base in [ast.unparse(b) for b in classes[name].bases], name
    methods = {n.name for n in classes["SpineSegTrainingTest"].body if isinstance(n, ast.FunctionDef)}
    assert {"setUp", "runTest", "test_TrainOneEpochOnPhantoms", "test_BadDatasetFailsWithExitCode2"} <= methods


def test_core_names_the_module_uses_exist():
    assert_core_names_exist(MODULE_PY.read_text() + HEADLESS.read_text())

def _headless(*args):
    return subprocess.run([sys.executable, str(HEADLESS), *args], capture_output=True, text=True, timeout=120)


def test_headless_script_usage_and_exit_codes():
    res = _headless("--help")
    assert res.returncode == 0 and "Exit codes" in res.stdout
    res = _headless()
    assert res.returncode == 2 and "usage:" in res.stderr
    res = _headless("fit", "x")
    assert res.returncode == 2 and "use train or cv" in res.stderr
    text = HEADLESS.read_text()
    assert "slicer.util.exit(" in text
    readme = (MODULE_DIR / "README.md").read_text()
    assert "--no-main-window --python-script" in readme and "Scripts/train.py" in readme
    for code in ("0", "1", "2", "130"):
        assert re.search(r"\|\s*" + code + r"\s*\|", readme), f"exit code {code} documented"


def test_neither_slicer_module_imports_the_other():
    """The modules share code only through the core (spineseg.moduleslogic), never through each other."""
    for path, other in ((MODULE_PY, "SpineSegUNet"), (ROOT / "SpineSegUNet" / "SpineSegUNet.py", "SpineSegTraining")):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
        assert other not in imported, f"{path.name} imports {other}"
