"""Checks that the Slicer modules' source only calls core names that exist (shared by both modules' tests)."""
from __future__ import annotations

import importlib
import re

#: the core modules the Slicer code names as ``module.X``: spineseg.moduleslogic's and terminology
CORE_MODULES = {name: f"spineseg.moduleslogic.{name}" for name in (
    "dataset_check", "headless_training", "model_registry", "process", "requirements", "results_table",
    "run_folder", "run_monitor", "segment_command", "training_command")}
CORE_MODULES["terminology"] = "spineseg.terminology"


def assert_core_names_exist(source: str) -> None:
    """Every ``<core module>.X`` in ``source`` is defined in that core module (and at least one is used)."""
    pattern = r"(?<![.\w])(" + "|".join(CORE_MODULES) + r")\.(\w+)"
    found = re.findall(pattern, source)
    assert found, "the source names no core module"
    for module, name in found:
        assert hasattr(importlib.import_module(CORE_MODULES[module]), name), f"{module}.{name}"
