"""Both modules' own Slicer self-tests (the ...Test classes Slicer runs with --testing), on real MRML."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_self_test(harness, module_py: Path, name: str) -> None:
    module = harness.load_module(module_py, name)
    harness.instantiate(module, name, module_py)
    test = getattr(module, name + "Test")()
    test.runTest()


def test_spineseg_unet_self_test(harness):
    run_self_test(harness, ROOT / "SpineSegUNet" / "SpineSegUNet.py", "SpineSegUNet")


def test_spineseg_training_self_test(harness):
    run_self_test(harness, ROOT / "SpineSegTraining" / "SpineSegTraining.py", "SpineSegTraining")
