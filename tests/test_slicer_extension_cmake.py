"""Configure the extension's CMake files with a stand-in Slicer package (cmake, no Slicer build).

The stand-in defines what ``find_package(Slicer)`` / ``${Slicer_USE_FILE}`` provide to an
extension (``slicerMacroBuildScriptedModule``, ``ctkMacroCompilePythonScript``,
``slicer_add_python_unittest``, the scripted-module folders, the extension config and
CPack includes) and records each call. That catches CMake syntax errors, files named but
missing (an error in Slicer's real macro too), and checks that the core package and the
module's test are registered.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

USE_SLICER = r"""
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.8/qt-scripted-modules)
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR ${Slicer_QTSCRIPTEDMODULES_LIB_DIR})
set(BUILD_TESTING ON)
function(_record line)
  file(APPEND "${SPINESEG_CMAKE_LOG}" "${line}\n")
endfunction()
function(_check_exists kind path)
  if(NOT IS_ABSOLUTE "${path}")
    set(path "${CMAKE_CURRENT_SOURCE_DIR}/${path}")
  endif()
  if(NOT EXISTS "${path}")
    message(FATAL_ERROR "${kind} given nonexistent file '${path}'")
  endif()
endfunction()
function(ctkMacroCompilePythonScript)
  cmake_parse_arguments(MY "NO_INSTALL_SUBDIR;GLOBAL_TARGET" "TARGET_NAME;SOURCE_DIR;DESTINATION_DIR;INSTALL_DIR" "SCRIPTS;RESOURCES" ${ARGN})
  foreach(f ${MY_SCRIPTS} ${MY_RESOURCES})
    _check_exists(ctkMacroCompilePythonScript "${f}")
    _record("copy ${MY_TARGET_NAME} ${MY_INSTALL_DIR}/${f}")
  endforeach()
endfunction()
macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY_SLICER "WITH_GENERIC_TESTS;WITH_SUBDIR;VERBOSE" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  if(MY_SLICER_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "Unknown keywords given to slicerMacroBuildScriptedModule(): ${MY_SLICER_UNPARSED_ARGUMENTS}")
  endif()
  foreach(f ${MY_SLICER_SCRIPTS} ${MY_SLICER_RESOURCES})
    _check_exists(slicerMacroBuildScriptedModule "${f}")
    _record("module ${MY_SLICER_NAME} ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}/${f}")
  endforeach()
endmacro()
function(add_test)
  cmake_parse_arguments(MY "" "NAME;WORKING_DIRECTORY" "COMMAND" ${ARGN})
  foreach(f ${MY_COMMAND})
    if(IS_ABSOLUTE "${f}" AND NOT f MATCHES "^/(usr|bin)/")
      _check_exists(add_test "${f}")
    endif()
  endforeach()
  _record("test ${MY_NAME}")
endfunction()
function(slicer_add_python_unittest)
  cmake_parse_arguments(MY "" "SCRIPT" "SLICER_ARGS;TESTNAME_PREFIX" ${ARGN})
  _check_exists(slicer_add_python_unittest "${MY_SCRIPT}")
  _record("unittest ${MY_SCRIPT}")
endfunction()
"""

CONFIG = r"""
set(Slicer_USE_FILE "${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake")
set(Slicer_EXTENSION_GENERATE_CONFIG "${CMAKE_CURRENT_LIST_DIR}/ExtensionConfig.cmake")
set(Slicer_EXTENSION_CPACK "${CMAKE_CURRENT_LIST_DIR}/ExtensionCPack.cmake")
"""


@pytest.fixture(scope="module")
def configured(tmp_path_factory):
    if shutil.which("cmake") is None:
        pytest.skip("cmake not installed")
    tmp = tmp_path_factory.mktemp("cmake")
    fake = tmp / "Slicer"
    fake.mkdir()
    (fake / "SlicerConfig.cmake").write_text(CONFIG)
    (fake / "UseSlicer.cmake").write_text(USE_SLICER)
    (fake / "ExtensionConfig.cmake").write_text('_record("extension-config")\n')
    (fake / "ExtensionCPack.cmake").write_text('_record("extension-cpack")\n')
    log = tmp / "calls.log"
    proc = subprocess.run(
        ["cmake", "-S", str(ROOT), "-B", str(tmp / "build"), f"-DSlicer_DIR={fake}",
         f"-DSPINESEG_CMAKE_LOG={log}", "-DCMAKE_C_COMPILER_WORKS=1", "-DCMAKE_CXX_COMPILER_WORKS=1"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return log.read_text().splitlines()


def test_module_scripts_resources_and_test_registered(configured):
    prefix = "module SpineSegUNet lib/Slicer-5.8/qt-scripted-modules/"
    module = {line[len(prefix):] for line in configured if line.startswith(prefix)}
    assert module == {"SpineSegUNet.py", "Scripts/segment_folder.py", "Resources/Icons/SpineSegUNet.png",
                      "Resources/UI/SpineSegUNet.ui",
                      "Resources/Terminology/SegmentationCategoryTypeModifier-SpineSeg.term.json"}
    assert "unittest SpineSegUNet.py" in configured


def test_core_package_installed_next_to_the_module(configured):
    prefix = "copy SpineSegCore lib/Slicer-5.8/qt-scripted-modules/"
    core = {line[len(prefix):] for line in configured if line.startswith(prefix)}
    expected = {p.relative_to(ROOT).as_posix() for p in (ROOT / "spineseg").rglob("*.py")}
    assert core == expected
    assert {"spineseg/__init__.py", "spineseg/__main__.py", "spineseg/moduleslogic/process.py",
            "spineseg/moduleslogic/segment_command.py", "spineseg/terminology.py"} <= core


def test_extension_config_and_cpack_included_last(configured):
    assert configured[-2:] == ["extension-config", "extension-cpack"]


def test_slicer_core_tier_registered_under_build_testing(configured):
    """Top-level Testing/ (the slicer-core tier, Testing/run.sh) is added as Slicer extensions expect."""
    assert "test SpineSeg_slicer_core_tier" in configured
    text = (ROOT / "CMakeLists.txt").read_text()
    block = text[text.index("if(BUILD_TESTING)"):]
    assert block.splitlines()[1].strip() == "add_subdirectory(Testing)"
