"""What SpineSeg UNet shows of the per-level read-out, without Slicer: table columns and rows, the review
and level-name lines, the model check, and the --levels command line and its Python packages."""
from __future__ import annotations

import json

import numpy as np
import pytest

from spineseg.labels import CANAL, DISC, VERTEBRA, ClassInfo
from spineseg.levels import read_levels
from spineseg.levels.outputs import json_bytes
from spineseg.levels.result import MEASUREMENT_COLUMNS, Review
from spineseg.moduleslogic import levels_readout as lr
from spineseg.moduleslogic.requirements import missing_requirements
from spineseg.moduleslogic.segment_command import SegmentOptions, segment_command

SPACING = (1.38, 1.38, 4.4)


@pytest.fixture(scope="module")
def readout(tmp_path_factory):
    """A phantom's read-out as segment --levels writes it (``.levels.json``), and the result it came from."""
    from spineseg.phantom import make_phantom

    ph = make_phantom(seed=2, size=(220, 220, 12), spacing=SPACING)
    result = read_levels(ph.label)
    result.review = Review(flag=False, reasons=[], uncertainty=0.012)
    path = tmp_path_factory.mktemp("readout") / "case_seg.levels.json"
    path.write_bytes(json_bytes(result))
    return lr.read_levels_file(path), result


def test_columns_have_stable_names_titles_and_units():
    names = [c.name for c in lr.TABLE_COLUMNS]
    assert len(names) == len(set(names))
    assert names[:2] == ["name", "kind"]
    # every measurement of the read-out is a column, in mm (volume in mm3), as a number
    by_name = {c.name: c for c in lr.TABLE_COLUMNS}
    for key in MEASUREMENT_COLUMNS:
        assert by_name[key].type == "double"
        assert by_name[key].unit == ("mm3" if key.endswith("_mm3") else "mm"), key
    assert [by_name[k].unit for k in lr.CENTROID_COLUMNS] == ["mm"] * 3
    assert all(c.type in ("string", "double", "int") and c.title and c.description for c in lr.TABLE_COLUMNS)


def test_rows_follow_the_structures(readout):
    levels, result = readout
    voxel = float(np.prod(SPACING))
    rows = lr.table_rows(levels, voxel)
    col = {c.name: i for i, c in enumerate(lr.TABLE_COLUMNS)}
    assert [r[col["name"]] for r in rows] == result.names()
    assert "L4-L5" in result.names() and "spinal canal" in result.names()
    for row, s in zip(rows, result.structures):
        assert len(row) == len(lr.TABLE_COLUMNS)
        assert row[col["kind"]] == s.kind and row[col["label"]] == s.label and row[col["voxels"]] == s.voxels
        # RAS is LPS with x and y negated
        np.testing.assert_allclose([row[col[k]] for k in lr.CENTROID_COLUMNS],
                                   [-s.centroid_mm[0], -s.centroid_mm[1], s.centroid_mm[2]], atol=1e-3)
        assert row[col["volume_mm3"]] == pytest.approx(s.voxels * voxel)
        if s.kind != "vertebra" and s.measurements.get("volume_mm3") is not None:
            # the read-out's own disc and canal volume is the same quantity
            assert row[col["volume_mm3"]] == pytest.approx(s.measurements["volume_mm3"], abs=0.01)
        for key in MEASUREMENT_COLUMNS:
            if key == "volume_mm3":
                continue
            value = s.measurements.get(key)
            assert row[col[key]] == (None if value is None else pytest.approx(value, abs=0.005)), (s.name, key)
        assert row[col["note"]] == (lr.PARTIAL_NOTE if s.partial else "")
    l4 = rows[result.names().index("L4")]
    assert l4[col["middle_height_mm"]] > 15 and l4[col["ap_depth_mm"]] > 20  # a real body was measured
    canal = rows[-1]
    assert canal[col["kind"]] == "canal" and canal[col["middle_height_mm"]] is None


def test_read_levels_file_refuses_other_files(tmp_path, readout):
    levels, _ = readout
    bad = tmp_path / "x.levels.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="could not read the per-level read-out x.levels.json"):
        lr.read_levels_file(bad)
    bad.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="is not a SpineSeg per-level read-out"):
        lr.read_levels_file(bad)
    bad.write_text(json.dumps(dict(levels, format_version=99)))
    with pytest.raises(ValueError, match="format version 99"):
        lr.read_levels_file(bad)
    with pytest.raises(ValueError, match="missing.levels.json"):
        lr.read_levels_file(tmp_path / "missing.levels.json")


def test_review_and_level_name_lines():
    flagged = {"review": {"flag": True, "reasons": ["L3 anterior height 9.0 mm is outside 12-45 mm",
                                                     "level names unreliable: the sacrum is not in view"],
                          "uncertainty": None},
               "levels_reliable": False, "levels_reasons": ["the sacrum is not in view"], "anchor": "none"}
    assert lr.review_text(flagged) == ("Review recommended: L3 anterior height 9.0 mm is outside 12-45 mm; "
                                       "level names unreliable: the sacrum is not in view.")
    assert lr.levels_text(flagged) == "Level names unreliable (reasons above)."
    unflagged = {"review": {"flag": False, "reasons": [], "uncertainty": 0.0123}, "levels_reliable": True,
                 "levels_reasons": [], "anchor": "sacrum"}
    assert lr.review_text(unflagged) == ("No review flag (flipped predictions disagree on 1.2% of the "
                                         "segmented voxels).")
    assert lr.levels_text(unflagged) == "Level names reliable (counted from the sacrum)."
    no_tta = dict(unflagged, review={"flag": False, "reasons": [], "uncertainty": None})
    assert "flip test-time augmentation was off" in lr.review_text(no_tta)
    assert lr.review_text({"review": {"flag": None}}) == "Review not assessed."
    # names unreliable for a reason the review does not give: the line gives it
    other = dict(flagged, levels_reasons=["no spinal canal"])
    assert lr.levels_text(other) == "Level names unreliable: no spinal canal."
    both = dict(flagged, levels_reasons=["the sacrum is not in view", "no spinal canal"])
    assert lr.levels_text(both) == "Level names unreliable: the sacrum is not in view; no spinal canal."
    anchored = dict(unflagged, anchor="L5-S1 disc")
    assert lr.levels_text(anchored) == "Level names reliable (counted from the L5-S1 disc)."


def test_levels_need_the_three_classes():
    assert lr.levels_unavailable_reason([VERTEBRA, DISC, CANAL]) is None
    assert lr.levels_unavailable_reason([c.to_dict() for c in (VERTEBRA, DISC, CANAL)]) is None
    reason = lr.levels_unavailable_reason([{"value": 1, "name": "spine", "color": [241, 214, 145]}])
    assert reason.endswith("this model labels spine") and "\n" not in reason
    assert lr.levels_unavailable_reason([ClassInfo(1, "vertebra", (1, 2, 3))]).endswith("labels vertebra")


def test_levels_option_on_the_command_line_and_its_package():
    argv = segment_command("py", ["in.nrrd"], "out.nrrd", SegmentOptions(levels=True))
    assert "--levels" in argv and argv[-1] == "--json"
    assert "--levels" not in segment_command("py", ["in.nrrd"], "out.nrrd", SegmentOptions())
    assert "--tta" in segment_command("py", ["in.nrrd"], "out.nrrd", SegmentOptions(tta=True))
    assert "--tta" not in segment_command("py", ["in.nrrd"], "out.nrrd", SegmentOptions())
    have = {"numpy", "SimpleITK", "safetensors", "onnxruntime"}
    assert missing_requirements("onnx", importable=lambda m: m in have) == []
    assert [r.module for r in missing_requirements("onnx", levels=True, importable=lambda m: m in have)] == ["slicerio"]


def test_summary_names_the_range_of_levels(readout):
    levels, result = readout
    vertebrae, discs = result.names("vertebra"), result.names("disc")
    assert lr.summary_text(levels) == (f"{len(vertebrae)} vertebrae ({vertebrae[0]} to {vertebrae[-1]}), "
                                       f"{len(discs)} discs ({discs[0]} to {discs[-1]}), spinal canal")
    one = {"structures": [{"name": "L5", "kind": "vertebra"}, {"name": "L5-S1", "kind": "disc"}]}
    assert lr.summary_text(one) == "1 vertebra (L5), 1 disc (L5-S1)"
    assert lr.summary_text({"structures": []}) == "no structures"
