"""The review flag: plausible phantoms pass, each implausibility and a high uncertainty is named."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from spineseg.geometry import CanonicalFrame
from spineseg.levels import read_levels
from spineseg.levels.result import LevelsResult, Structure
from spineseg.levels import review
from spineseg.phantom import make_phantom
from test_inference_fixtures import random_model  # noqa: F401  (fixture)

GEOMETRY = dict(size=(440, 440, 12), spacing=(0.69, 0.69, 4.4), levels=True)


@pytest.fixture(scope="module")
def phantom():
    """Seed 0: T10 is cut by the top of the image (partial: its heights are the field of view's)."""
    ph = make_phantom(seed=0, **GEOMETRY)
    frame = CanonicalFrame.of(ph.label, warn=False)
    return ph, frame, frame.to_canonical(sitk.GetArrayFromImage(ph.label)), read_levels(ph.label)


def test_plausible_phantom_is_not_flagged(phantom):
    ph, frame, label, levels = phantom
    result = review.review_case(levels, ph.label, 0.01)
    assert result.flag is False and result.reasons == [] and result.uncertainty == 0.01


def test_uncertainty_above_the_limit_flags(phantom):
    ph, frame, label, levels = phantom
    high = review.review_case(levels, ph.label, 2 * review.UNCERTAINTY_LIMIT)
    assert high.flag is True and len(high.reasons) == 1 and "disagree" in high.reasons[0]
    unknown = review.review_case(levels, ph.label, None)
    assert unknown.flag is False and unknown.uncertainty is None
    assert unknown.to_dict() == {"flag": False, "reasons": [], "uncertainty": None}


def test_missing_disc_is_named(phantom):
    ph, frame, label, _ = phantom
    levels_gt = frame.to_canonical(sitk.GetArrayFromImage(ph.levels))
    cut = label.copy()
    cut[levels_gt == 122] = 0  # the L3-L4 disc
    levels = read_levels(frame.image_from_canonical(cut))
    result = review.review_case(levels, frame.image_from_canonical(cut), 0.01)
    assert result.flag is True
    assert "no disc between L3 and L4" in result.reasons, result.reasons


def test_fragments_far_from_the_spine(phantom):
    _, frame, label, _ = phantom
    spacing = frame.canonical_spacing
    assert review.fragments_far_from_spine(label, spacing) == []
    with_parts = label.copy()
    with_parts[4:8, 5:25, 5:25] = 1   # 4 slices x 13.8 x 13.8 mm in a corner: far from the spine
    with_parts[4, 30:32, 5:7] = 1     # a speck: too small to matter
    found = review.fragments_far_from_spine(with_parts, spacing)
    assert len(found) == 1
    volume, distance = found[0]
    assert volume == pytest.approx(4 * 20 * 20 * float(np.prod(spacing)))
    assert distance > review.FRAGMENT_DISTANCE_MM
    levels = read_levels(frame.image_from_canonical(label))  # the read-out of the clean map
    result = review.review_case(levels, frame.image_from_canonical(with_parts), 0.01)
    assert result.flag is True and any("fragment" in r for r in result.reasons)


def _levels(structures, shape=(3, 20, 20)) -> LevelsResult:
    return LevelsResult(np.zeros(shape, np.uint8), structures, True, [], "sacrum")


def _body(name, label, **m):
    return Structure(label, name, "vertebra", 100, (0.0, 0.0, 0.0), m)


def test_heights_depth_and_count_outside_ranges():
    ok = dict(anterior_height_mm=25.0, middle_height_mm=24.0, posterior_height_mm=25.0, ap_depth_mm=33.0)
    structures = [
        _body("L3", 22, **{**ok, "middle_height_mm": 55.0}),
        Structure(122, "L3-L4", "disc", 100, (0.0, 0.0, 0.0), {"middle_height_mm": 30.0}),
        _body("L4", 23, **{**ok, "ap_depth_mm": 10.0}),
        Structure(123, "L4-L5", "disc", 100, (0.0, 0.0, 0.0), {"middle_height_mm": 2.0}),  # thin: real
        _body("L5", 24, **ok),
    ]
    reasons = review.plausibility_reasons(_levels(structures))
    assert any(r.startswith("only 3 vertebrae") for r in reasons)
    assert "L3 middle height 55.0 mm is outside 12-45 mm" in reasons
    assert any(r.startswith("L4 AP depth 10.0 mm") for r in reasons)
    assert any(r.startswith("L3-L4 disc middle height 30.0 mm") for r in reasons)
    assert not any("L4-L5" in r or r.startswith("L5") for r in reasons)
    assert len(reasons) == 4
    # the same numbers on a body the image cuts are not held against it
    structures[0].partial = True
    assert not any(r.startswith("L3 middle") for r in review.plausibility_reasons(_levels(structures)))


def test_unreliable_names_flag_with_their_reasons(phantom):
    ph, frame, label, levels = phantom
    unsure = LevelsResult(levels.canonical_labels, levels.structures, False, ["no sacrum in view"], "none")
    result = review.review_case(unsure, ph.label, 0.01)
    assert result.flag is True and result.reasons == ["level names unreliable: no sacrum in view"]


def test_segment_levels_writes_the_review(tmp_path, phantom, random_model, monkeypatch, capsys):
    """``segment --levels --tta``: the review block in .levels.json and in the done event, uncertainty from TTA."""
    import dataclasses
    import json

    import spineseg.inference as inference
    from spineseg.cli import main

    pytest.importorskip("slicerio")
    ph, frame, label, _ = phantom
    with_parts = label.copy()
    with_parts[4:8, 5:25, 5:25] = 1
    fragment = frame.image_from_canonical(with_parts)
    real = inference.segment_image

    def fake(image, model, **kw):  # the tiny model's labels are noise: return the phantom's, with a fragment
        return dataclasses.replace(real(image, model, **kw), label=fragment)

    monkeypatch.setattr(inference, "segment_image", fake)
    src = tmp_path / "case.nii.gz"
    sitk.WriteImage(ph.image, str(src))
    out = tmp_path / "out" / "case_seg.nii.gz"
    assert main(["segment", str(src), "-o", str(out), "--model", str(random_model), "--device", "cpu", "--levels", "--tta",
                 "--json"]) == 0
    done = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"done"' in line][-1]
    written = json.loads((out.parent / "case_seg.levels.json").read_text())["review"]
    reported = done["outputs"][0]["levels"]["review"]
    assert written == reported and written["flag"] is True
    assert any("fragment" in r for r in written["reasons"])
    assert isinstance(written["uncertainty"], float) and written["uncertainty"] == pytest.approx(
        done["outputs"][0]["uncertainty"], abs=1e-4)
