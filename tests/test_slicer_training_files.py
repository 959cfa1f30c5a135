"""Static checks of the SpineSeg Training Slicer module that run without Slicer.

The combo boxes list what the core offers, the icon is there, the headless script runs
(outside Slicer too) with the documented exit codes, and neither module imports the other.
The checks both modules share (.ui against the code, template, Python 3.9 grammar, core
names) are in test_slicer_module_files.py.
"""
from __future__ import annotations

import ast
import re
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


from spineseg.networks import network_names
from spineseg.training.presets import PRESETS

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "SpineSegTraining"
MODULE_PY = MODULE_DIR / "SpineSegTraining.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "SpineSegTraining.ui"
HEADLESS = MODULE_DIR / "Scripts" / "train.py"


def _widgets():
    root = ET.parse(UI_FILE).getroot()
    return root, {w.get("name"): w for w in root.iter("widget")}


def test_combo_items_match_parameter_labels():
    """Designer shows these items; at run time the parameterNodeWrapper refills them with the same texts."""
    _, widgets = _widgets()

    def items(name):
        return [i.findtext("property/string") for i in widgets[name].findall("item")]

    assert items("architectureComboBox") == list(network_names())
    assert len(items("presetComboBox")) == len(PRESETS)
    assert len(items("deviceComboBox")) == 3


def test_icon_is_a_128_png():
    data = (MODULE_DIR / "Resources" / "Icons" / "SpineSegTraining.png").read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == (128, 128)


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
