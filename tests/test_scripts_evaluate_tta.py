"""scripts/evaluate_tta.py: Spearman's rank correlation, the pass cache, and a real run on phantom cases."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from script_modules import load_script
from test_inference_fixtures import phantom_cases, trained_model  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def script():
    return load_script("evaluate_tta")


def test_spearman_ranks_with_ties(script):
    assert script.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert script.spearman([1, 2, 3, 4], [9, 1, 0, -5]) == pytest.approx(-1.0)
    assert script.spearman([1, 2, 3, 4], [1, 8, 27, 64]) == pytest.approx(1.0)  # ranks, not values
    # ties take their mean rank: x ranks (1, 2.5, 2.5, 4), y ranks (1, 2, 3, 4) -> Pearson of ranks
    x_ranks, y_ranks = np.array([1, 2.5, 2.5, 4]), np.arange(1, 5.0)
    assert script.spearman([0, 5, 5, 9], [1, 2, 3, 4]) == pytest.approx(np.corrcoef(x_ranks, y_ranks)[0, 1])
    assert math.isnan(script.spearman([1, 1, 1], [1, 2, 3]))


def test_flip_sets_match_segment(script, trained_model, tmp_path, capsys):  # noqa: F811
    from spineseg.inference import InferenceOptions, segment_image
    from spineseg.metrics import case_metrics
    from spineseg.modelfile import read_header

    data = phantom_cases(tmp_path / "data", (3, 4))
    out = tmp_path / "eval"
    assert script.main([str(trained_model), str(data), "-o", str(out), "--cases", "ph3", "ph4",
                        "--thick-mm", "8.8"]) == 0
    printed = capsys.readouterr().out
    assert "| left-right | 2 |" in printed and "Spearman rho" in printed
    rows = json.loads((out / "tta.json").read_text())["rows"]
    assert len(rows) == 2 * 2 * len(script.FLIP_SETS)
    # the cached passes give exactly what segment_image computes from scratch
    image = sitk.ReadImage(str(data / "ph3_image.nii.gz"))
    label = sitk.ReadImage(str(data / "ph3_label.nii.gz"))
    res = segment_image(image, trained_model, options=InferenceOptions(device="cpu", tta=True))
    classes = list(read_header(trained_model).classes)
    direct = case_metrics(script.canonical(res.label), script.canonical(label), classes)["mean_dsc"]
    row = next(r for r in rows if (r["case"], r["condition"], r["flips"]) == ("ph3", "thin", "left-right"))
    assert row["mean_dsc"] == pytest.approx(direct, abs=1e-9)
    assert row["uncertainty"] == pytest.approx(res.uncertainty, abs=1e-9)
    assert script.main([str(trained_model), str(data), "-o", str(out), "--cases", "ph3"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_model_card_shows_the_recorded_run(script):
    """The card's TTA / review tables are the tables of the run it records, to the digit."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    card = (root / "Resources" / "Models" / "README.md").read_text()
    for condition in ("thin", "thick"):
        result = json.loads((root / "docs" / "default-model" / f"review-{condition}.json").read_text())
        assert result["conditions"] == [condition]
        for line in script.tables(result).splitlines():
            assert line in card, line
