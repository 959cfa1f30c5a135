"""The core's import layers (``[tool.importlinter]`` in pyproject.toml), checked with import-linter.

A lower layer importing a higher one (e.g. ``spineseg.io`` importing ``spineseg.report``), or the
core importing ``spineseg.commands`` or a Slicer module, fails here with import-linter's report.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    pytest.importorskip("importlinter", reason="import-linter is in the test extra: pip install -e '.[test]'")
    run = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                          "lint_imports_command()", "--no-cache"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_every_core_module_has_a_layer():
    """A new module outside the layers would be unchecked: each top-level module of spineseg is listed."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    listed = {name.strip() for layer in layers for name in layer.split("|")}
    package = ROOT / "spineseg"
    modules = {f"spineseg.{p.stem}" for p in package.glob("*.py") if p.stem != "__init__"}
    modules |= {f"spineseg.{p.parent.name}" for p in package.glob("*/__init__.py")}
    assert modules - listed == set(), "add these modules to a layer in pyproject.toml"
