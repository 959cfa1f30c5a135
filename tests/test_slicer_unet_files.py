"""Static checks of the Slicer extension that run without Slicer.

The .ui parses and matches the code (every ``self.ui.<name>`` exists, every
SlicerParameterName is a parameter-node field of a type its widget can show), the
CMake lists name exactly the files that exist, the module sources use Python 3.9
grammar, and the extension metadata is complete.
"""
from __future__ import annotations

import ast
import json
import re
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from core_names import assert_core_names_exist

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "SpineSegUNet"
MODULE_PY = MODULE_DIR / "SpineSegUNet.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "SpineSegUNet.ui"
BATCH = MODULE_DIR / "Scripts" / "segment_folder.py"

# which widget class can show which parameter type (Slicer's parameterNodeWrapper GUI connectors)
WIDGET_FOR_TYPE = {"bool": {"QCheckBox", "ctkCheckBox"}, "int": {"QSpinBox", "QSlider", "ctkSliderWidget"},
                   "pathlib.Path": {"ctkPathLineEdit", "ctkDirectoryButton"}, "enum": {"QComboBox", "ctkComboBox"},
                   "node": {"qMRMLNodeComboBox"}}


def _ui_widgets():
    root = ET.parse(UI_FILE).getroot()
    return root, {w.get("name"): w for w in root.iter("widget")}


def _parameter_fields():
    """name -> annotation source of the @parameterNodeWrapper class, and the enum classes' member counts."""
    tree = ast.parse(MODULE_PY.read_text())
    fields, enums = {}, {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            bases = [ast.unparse(b) for b in node.bases]
            if "enum.Enum" in bases:
                enums[node.name] = sum(isinstance(s, ast.Assign) for s in node.body)
            if any(ast.unparse(d) == "parameterNodeWrapper" for d in node.decorator_list):
                for stmt in node.body:
                    if isinstance(stmt, ast.AnnAssign):
                        fields[stmt.target.id] = ast.unparse(stmt.annotation)
    return fields, enums


def _kind(annotation: str, enums) -> str:
    base = re.sub(r"^Annotated\[(\w+(?:\.\w+)?),.*\]$", r"\1", annotation)
    if base in enums:
        return "enum"
    if base.startswith("vtkMRML"):
        return "node"
    return base


def test_ui_parses_and_names_are_unique():
    root, widgets = _ui_widgets()
    assert root.tag == "ui" and root.find("widget").get("class") == "qMRMLWidget"
    names = [w.get("name") for w in root.iter("widget")]
    assert len(names) == len(set(names))


def test_every_ui_widget_the_code_uses_exists():
    _, widgets = _ui_widgets()
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_PY.read_text()))
    assert used, "the module uses no widgets?"
    missing = sorted(used - set(widgets))
    assert not missing, f"widgets used in SpineSegUNet.py but absent from the .ui: {missing}"


def test_parameter_bindings_match_the_parameter_node():
    _, widgets = _ui_widgets()
    fields, enums = _parameter_fields()
    assert fields, "no @parameterNodeWrapper class found"
    bound = {}
    for name, w in widgets.items():
        for prop in w.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                assert prop.get("stdset") == "0"
                bound[prop.findtext("string")] = w
    assert set(bound) == set(fields), f"ui bindings {sorted(bound)} vs parameter fields {sorted(fields)}"
    for field, widget in bound.items():
        kind = _kind(fields[field], enums)
        assert widget.get("class") in WIDGET_FOR_TYPE[kind], (field, fields[field], widget.get("class"))
        if kind == "enum":  # the connector refills the combo box; the .ui items mirror the members for Designer
            base = re.sub(r"^Annotated\[(\w+),.*\]$", r"\1", fields[field])
            assert len(widget.findall("item")) == enums[base], field


def test_custom_widgets_declared_and_connections_valid():
    root, widgets = _ui_widgets()
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used = {w.get("class") for w in root.iter("widget")}
    slicer_classes = {c for c in used if c.startswith(("qMRML", "ctk"))}
    assert slicer_classes <= declared, slicer_classes - declared
    for conn in root.iter("connection"):
        assert conn.findtext("sender") in widgets and conn.findtext("receiver") in widgets
    mrml = {n for n, w in widgets.items() if w.get("class") == "qMRMLNodeComboBox"}
    receivers = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    assert mrml <= receivers, "every node combo box must get the scene"


def _cmake_list(text: str, var: str, module: str):
    m = re.search(r"set\(" + var + r"\s+(.*?)\)", text, re.S)
    assert m, var
    return [t.replace("${MODULE_NAME}", module) for t in m.group(1).split()]


@pytest.mark.parametrize("module", ["SpineSegUNet", "SpineSegTraining"])
def test_module_cmake_lists_every_file_and_only_existing_files(module):
    folder = ROOT / module
    text = (folder / "CMakeLists.txt").read_text(encoding="utf-8")
    scripts = _cmake_list(text, "MODULE_PYTHON_SCRIPTS", module)
    resources = _cmake_list(text, "MODULE_PYTHON_RESOURCES", module)
    for rel in scripts + resources:
        assert (folder / rel).is_file(), f"CMake names a missing file: {rel}"
    on_disk_py = {p.relative_to(folder).as_posix() for p in folder.rglob("*.py")}
    assert on_disk_py == set(scripts), "every script in the module folder must be listed"
    on_disk_res = {p.relative_to(folder).as_posix() for p in (folder / "Resources").rglob("*") if p.is_file()}
    assert on_disk_res == set(resources), "every resource in the module folder must be listed"
    assert "slicerMacroBuildScriptedModule(" in text and "WITH_GENERIC_TESTS" in text
    assert re.search(r"slicer_add_python_unittest\(SCRIPT \$\{MODULE_NAME\}\.py\)", text)
    assert "add_subdirectory(Testing)" in text
    assert (folder / "Testing" / "CMakeLists.txt").read_text(encoding="utf-8").strip() == "add_subdirectory(Python)"
    assert (folder / "Testing" / "Python" / "CMakeLists.txt").is_file()


def test_top_level_cmake_is_an_extension():
    text = (ROOT / "CMakeLists.txt").read_text()
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert re.search(r"set\(" + key + r" ", text), key
    assert "find_package(Slicer REQUIRED)" in text and "include(${Slicer_USE_FILE})" in text
    assert "include(${Slicer_EXTENSION_GENERATE_CONFIG})" in text and "include(${Slicer_EXTENSION_CPACK})" in text
    for sub in re.findall(r"^add_subdirectory\((\w+)\)", text, re.M):
        assert (ROOT / sub / "CMakeLists.txt").is_file(), sub
    assert "add_subdirectory(SpineSegUNet)" in text
    assert "spineseg/*.py" in text, "the core package must be installed with the extension"
    # the icon and screenshot named by URL are in the repository too
    for key in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        url = re.search(r'set\(' + key + r' "([^"]+)"\)', text).group(1)
        rel = url.split("/main/", 1)[1]
        assert (ROOT / rel).is_file(), rel


def _png_size(path: Path):
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", data[16:24])


def test_icons_and_screenshot():
    assert _png_size(ROOT / "Resources" / "SpineSeg.png") == (128, 128)
    assert _png_size(MODULE_DIR / "Resources" / "Icons" / "SpineSegUNet.png") == (128, 128)
    w, h = _png_size(ROOT / "Resources" / "Screenshots" / "SpineSegUNet_panel.png")
    assert w > 300 and h > 300


def test_s4ext_and_catalog_entry():
    entries = {}
    for line in (ROOT / "SpineSegExtension.s4ext").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            entries[key] = value.strip()
    for key in ("scm", "scmurl", "scmrevision", "depends", "build_subdirectory", "homepage", "contributors",
                "category", "iconurl", "status", "description", "screenshoturls", "enabled"):
        assert entries.get(key), key
    catalog = json.loads((ROOT / "SpineSegExtension.json").read_text())
    allowed = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
               "dicom_support_rule", "build_subdirectory", "enabled", "tier"}  # schema v1.0.1/1.0.2 properties
    assert {"$schema", "category", "scm_url"} <= set(catalog) <= allowed
    assert catalog["$schema"].startswith("https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/"
                                         "slicer-extension-catalog-entry-schema-v1.0.")
    assert 1 <= catalog["tier"] <= 5 and catalog["category"] == entries["category"]
    assert catalog["scm_url"] == entries["scmurl"]


SOURCES_39 = [MODULE_PY, BATCH, *sorted((ROOT / "spineseg").rglob("*.py"))]


@pytest.mark.parametrize("path", SOURCES_39, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_python39_grammar(path):
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


def test_module_classes_follow_the_scripted_template():
    tree = ast.parse(MODULE_PY.read_text())
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    expected = {"SpineSegUNet": "ScriptedLoadableModule", "SpineSegUNetWidget": "ScriptedLoadableModuleWidget",
                "SpineSegUNetLogic": "ScriptedLoadableModuleLogic", "SpineSegUNetTest": "ScriptedLoadableModuleTest"}
    for name, base in expected.items():
        assert name in classes and base in [ast.unparse(b) for b in classes[name].bases], name
    assert "VTKObservationMixin" in [ast.unparse(b) for b in classes["SpineSegUNetWidget"].bases]
    test_methods = {n.name for n in classes["SpineSegUNetTest"].body if isinstance(n, ast.FunctionDef)}
    assert {"setUp", "runTest", "test_SampleSegmentation", "test_FailureLeavesSceneUnchanged"} <= test_methods


@pytest.mark.parametrize("path", [MODULE_PY, BATCH], ids=lambda p: p.name)
def test_core_names_the_module_uses_exist(path):
    """Every ``<core module>.X`` the Slicer code calls is defined in the core."""
    assert_core_names_exist(path.read_text())

def test_batch_script_exits_through_slicer():
    text = BATCH.read_text()
    assert "slicer.util.exit(" in text and "--input" in text and "--output" in text
    readme = (MODULE_DIR / "README.md").read_text()
    assert "--no-main-window --python-script" in readme and "segment_folder.py" in readme
