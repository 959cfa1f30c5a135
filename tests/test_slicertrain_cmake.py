"""Configure SpineSegTraining/CMakeLists.txt with the stand-in Slicer package of test_slicer_cmake.py.

The module is added to a minimal extension project here (the top-level CMakeLists.txt is the
lead's), so this checks the module's own CMake: syntax, every named file exists, and the module
files and its Slicer unittest are registered.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from test_slicer_cmake import CONFIG, USE_SLICER

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def configured(tmp_path_factory):
    if shutil.which("cmake") is None:
        pytest.skip("cmake not installed")
    tmp = tmp_path_factory.mktemp("cmake_train")
    fake = tmp / "Slicer"
    fake.mkdir()
    (fake / "SlicerConfig.cmake").write_text(CONFIG)
    (fake / "UseSlicer.cmake").write_text(USE_SLICER)
    (fake / "ExtensionConfig.cmake").write_text("")
    (fake / "ExtensionCPack.cmake").write_text("")
    src = tmp / "src"
    src.mkdir()
    (src / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.16.3...3.19.7 FATAL_ERROR)\nproject(SpineSegTrainingOnly NONE)\n"
        "find_package(Slicer REQUIRED)\ninclude(${Slicer_USE_FILE})\n"
        f'add_subdirectory("{(ROOT / "SpineSegTraining").as_posix()}" SpineSegTraining)\n')
    log = tmp / "calls.log"
    proc = subprocess.run(["cmake", "-S", str(src), "-B", str(tmp / "build"), f"-DSlicer_DIR={fake}",
                           f"-DSPINESEG_CMAKE_LOG={log}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return log.read_text().splitlines()


def test_training_module_files_and_unittest_registered(configured):
    prefix = "module SpineSegTraining lib/Slicer-5.8/qt-scripted-modules/"
    module = {line[len(prefix):] for line in configured if line.startswith(prefix)}
    assert module == {"SpineSegTraining.py", "Scripts/train.py", "Resources/Icons/SpineSegTraining.png",
                      "Resources/UI/SpineSegTraining.ui"}
    assert "unittest SpineSegTraining.py" in configured
