"""SpineSegTraining's CMake, configured as part of the whole extension (the stand-in Slicer package and
the ``configured`` fixture of test_slicer_extension_cmake.py): the module's files and its Slicer unittest are
registered, so the top-level ``add_subdirectory(SpineSegTraining)`` and the module's own list both work.
"""
from __future__ import annotations

from test_slicer_extension_cmake import configured  # noqa: F401 (fixture: the extension configured once)


def test_training_module_files_and_unittest_registered(configured):  # noqa: F811
    prefix = "module SpineSegTraining lib/Slicer-5.8/qt-scripted-modules/"
    module = {line[len(prefix):] for line in configured if line.startswith(prefix)}
    assert module == {"SpineSegTraining.py", "Scripts/train.py", "Resources/Icons/SpineSegTraining.png",
                      "Resources/UI/SpineSegTraining.ui"}
    assert "unittest SpineSegTraining.py" in configured
