"""Static checks of the extension and SpineSeg UNet that run without Slicer.

The CMake lists name exactly the files that exist, the extension metadata is complete,
the icons are there, and the batch script exits through Slicer. The checks both modules
share (.ui against the code, template, Python 3.9 grammar, core names) are in
test_slicer_module_files.py.
"""
from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "SpineSegUNet"
BATCH = MODULE_DIR / "Scripts" / "segment_folder.py"


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


def test_batch_script_exits_through_slicer():
    text = BATCH.read_text()
    assert "slicer.util.exit(" in text and "--input" in text and "--output" in text
    readme = (MODULE_DIR / "README.md").read_text()
    assert "--no-main-window --python-script" in readme and "segment_folder.py" in readme
