"""Training's validation scores a case exactly as ``spineseg segment`` + ``spineseg evaluate`` do."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_training_crossval import write_phantoms


@pytest.mark.slow
def test_validation_dsc_equals_segment_then_evaluate(tmp_path, capsys):
    """The DSC in model.json and the validation report is what a user gets with the saved model.

    The phantoms (1.8 mm in-plane) are trained at 2.4 mm, so both paths resample in-plane to
    the model's spacing and back to the case's grid; N4 is on, so preprocessing is covered too.
    """
    from spineseg.cli import main

    data = write_phantoms(tmp_path / "data", 3)
    run = tmp_path / "run"
    assert main(["train", str(data), "-o", str(run), "--model", "resunet", "--hparam", "width=4", "--epochs", "2",
                 "--window", "4", "32", "32", "--windows-per-case", "4", "--batch", "4", "--lr", "0.01",
                 "--inplane-mm", "2.4", "--workers", "0", "--device", "cpu", "--seed", "3",
                 "--val-fraction", "0.34"]) == 0
    header = json.loads((run / "model" / "model.json").read_text())
    [cid] = header["training"]["validation_cases"]
    validation = json.loads((run / "validation" / "metrics.json").read_text())["cases"][cid]

    seg = tmp_path / "seg"
    assert main(["segment", str(data / f"{cid}_image.nii.gz"), "--model", str(run / "model"), "-o", str(seg),
                 "--device", "cpu"]) == 0
    [pred] = sorted(seg.iterdir())
    assert main(["evaluate", str(pred), str(data / f"{cid}_label.nii.gz"), "-o", str(tmp_path / "eval")]) == 0
    capsys.readouterr()
    user = json.loads((tmp_path / "eval" / "metrics.json").read_text())["cases"][cid]

    assert validation["mean_dsc"] == pytest.approx(user["mean_dsc"], abs=1e-6)
    assert header["metrics"]["validation"]["mean_dsc"] == pytest.approx(user["mean_dsc"], abs=1e-6)
    for name, c in user["classes"].items():
        assert validation["classes"][name]["dsc"] == pytest.approx(c["dsc"], abs=1e-6, nan_ok=True), name
        assert validation["classes"][name]["pred_voxels"] == c["pred_voxels"], name
    assert validation["union"]["dsc"] == pytest.approx(user["union"]["dsc"], abs=1e-6)
    assert 0.0 < user["union"]["dsc"] < 1.0  # a real prediction, neither empty nor everything
