"""scripts/evaluate_model.py: thick-slice simulation of a labelled case, and a real run on phantom cases."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from script_modules import load_script
from test_inference_fixtures import phantom_cases, small_phantom, trained_model  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def script():
    return load_script("evaluate_model")


def test_thick_version_averages_slices_and_keeps_central_labels(script):
    arr = np.repeat(np.arange(11, dtype=np.float32)[:, None, None], 6, axis=1).repeat(5, axis=2)  # z, y, x
    lab = (np.arange(11)[:, None, None] * np.ones((1, 6, 5))).astype(np.uint8)
    image, label = sitk.GetImageFromArray(arr), sitk.GetImageFromArray(lab)
    for im in (image, label):
        im.SetSpacing((0.6, 0.6, 0.9))
    timg, tlab, k = script.thick_version(image, label, 4.4)
    assert k == 5 and timg.GetSize() == (5, 6, 2) and tlab.GetSize() == (5, 6, 2)
    assert timg.GetSpacing() == pytest.approx((0.6, 0.6, 4.5))
    assert sitk.GetArrayFromImage(timg)[:, 0, 0].tolist() == [2.0, 7.0]  # means of slices 0-4 and 5-9
    assert sitk.GetArrayFromImage(tlab)[:, 0, 0].tolist() == [2, 7]  # their central slices' labels


def test_evaluates_thin_and_thick_and_writes_reports(script, trained_model, tmp_path, capsys):  # noqa: F811
    data = phantom_cases(tmp_path / "data", (3, 4))
    out = tmp_path / "eval"
    import shutil

    model = tmp_path / "model"
    shutil.copytree(trained_model, model)
    assert script.main([str(model), str(data), "-o", str(out), "--cases", "ph3", "ph4",
                        "--thick-mm", "8.8", "--record"]) == 0
    table = capsys.readouterr().out
    assert "| thin (as stored) |" in table and "| thick (~8.8 mm) |" in table
    summary = json.loads((out / "summary.json").read_text())
    assert summary["k"] == [2] and summary["cases"] == ["ph3", "ph4"]
    thin = summary["conditions"]["thin"]
    assert thin["mean_dsc"] > 0.6  # the tiny phantom model (union DSC 0.84 on phantoms)
    assert set(thin["per_class_dsc"]) == {"vertebra", "intervertebral disc", "spinal canal"}
    for cond in ("thin", "thick"):
        assert (out / cond / "report.md").is_file() and (out / cond / "metrics.csv").is_file()
    from spineseg.modelfile import load_model

    recorded = load_model(model).header.metrics["heldout"]  # still a valid model, now with its results
    assert recorded["conditions"]["thin"]["mean_dsc"] == pytest.approx(thin["mean_dsc"])
    # a second run refuses to replace the reports without --overwrite
    assert script.main([str(model), str(data), "-o", str(out), "--cases", "ph3"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_unknown_case_is_a_one_line_error(script, trained_model, tmp_path, capsys):  # noqa: F811
    data = tmp_path / "data"
    data.mkdir()
    image, label = small_phantom(3)
    sitk.WriteImage(image, str(data / "ph3_image.nii.gz"))
    sitk.WriteImage(label, str(data / "ph3_label.nii.gz"))
    assert script.main([str(trained_model), str(data), "-o", str(tmp_path / "e"), "--cases", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0] and not (tmp_path / "e").exists()
