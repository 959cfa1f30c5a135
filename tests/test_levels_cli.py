"""``spineseg segment --levels``: the read-out's files beside the label map, atomic and planned like the others."""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from spineseg.cli import main
from spineseg.levels import read_levels
from test_inference_fixtures import random_model  # noqa: F401  (fixture)

slicerio = pytest.importorskip("slicerio")

LEVEL_FILES = ("case_seg.levels.nii.gz", "case_seg.levels.json", "case_seg.measurements.csv", "case_seg.seg.nrrd")


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A phantom image and its label map; the tests make 'segment' return that label (the network is random)."""
    from spineseg.phantom import make_phantom

    folder = tmp_path_factory.mktemp("levels_case")
    ph = make_phantom(seed=2, size=(440, 440, 12), spacing=(0.69, 0.69, 4.4))
    sitk.WriteImage(ph.image, str(folder / "case.nii.gz"))
    return folder / "case.nii.gz", ph.label


@pytest.fixture
def segment_gives_label(monkeypatch, case):
    import spineseg.inference as inference

    real = inference.segment_image
    calls = []

    def fake(image, model, **kw):
        calls.append(1)
        return dataclasses.replace(real(image, model, **kw), label=case[1])

    monkeypatch.setattr(inference, "segment_image", fake)
    return calls


def _names(folder: Path):
    return sorted(p.name for p in folder.iterdir())


def test_levels_outputs(tmp_path, case, random_model, segment_gives_label, capsys):
    out = tmp_path / "out" / "case_seg.nii.gz"
    rc = main(["segment", str(case[0]), "-o", str(out), "--model", str(random_model), "--device", "cpu", "--levels",
               "--json"])
    assert rc == 0
    assert _names(out.parent) == sorted(("case_seg.nii.gz",) + LEVEL_FILES)
    expected = read_levels(case[1])
    doc = json.loads((out.parent / "case_seg.levels.json").read_text())
    assert doc["levels_reliable"] is True and doc["anchor"] == "sacrum"
    assert doc["review"] == {"flag": False, "reasons": [], "uncertainty": None}  # plausible; no --tta
    assert [s["name"] for s in doc["structures"]] == expected.names()
    l4 = next(s for s in doc["structures"] if s["name"] == "L4")
    assert l4["label"] == 23 and l4["kind"] == "vertebra" and l4["measurements"]["ap_depth_mm"] > 20
    levels = sitk.ReadImage(str(out.parent / "case_seg.levels.nii.gz"))
    assert levels.GetSize() == case[1].GetSize() and levels.GetDirection() == case[1].GetDirection()
    arr = sitk.GetArrayFromImage(levels)
    assert np.array_equal(arr > 0, sitk.GetArrayFromImage(case[1]) > 0)
    for s in doc["structures"]:
        assert int((arr == s["label"]).sum()) == s["voxels"]
    with open(out.parent / "case_seg.measurements.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows] == expected.names()
    assert float(next(r for r in rows if r["name"] == "L4-L5")["middle_height_mm"]) > 5

    seg = slicerio.read_segmentation(str(out.parent / "case_seg.seg.nrrd"))
    segments = seg["segments"]
    assert [s["name"] for s in segments] == expected.names()
    assert {s["name"]: s["labelValue"] for s in segments}["L4-L5"] == 123
    by_name = {s["name"]: s for s in segments}
    assert by_name["L4"]["terminology"]["type"] == ["SCT", "11994002", "L4 vertebra"]
    assert by_name["L4-L5"]["terminology"]["type"] == ["SCT", "84020006", "L4/L5 disc"]
    assert by_name["S1"]["terminology"]["type"][1] == "54735007"
    assert by_name["L3"]["color"] != by_name["L4"]["color"] and by_name["L3"]["color"] == by_name["L5"]["color"]
    assert by_name["L3-L4"]["color"] != by_name["L4-L5"]["color"]
    voxels = np.transpose(seg["voxels"], (2, 1, 0))  # (i, j, k) -> numpy (z, y, x)
    assert np.array_equal(voxels, arr)
    assert np.allclose(seg["ijkToLPS"][:3, 3], levels.GetOrigin())
    done = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"done"' in line][-1]
    assert done["outputs"][0]["levels"]["levels_reliable"] is True


def test_levels_overlay_names_each_level(tmp_path, case, random_model, segment_gives_label):
    pytest.importorskip("matplotlib")
    out = tmp_path / "case_seg.nii.gz"
    assert main(["segment", str(case[0]), "-o", str(out), "--model", str(random_model), "--device", "cpu",
                 "--levels", "--overlay"]) == 0
    png = tmp_path / "case_seg_overlay.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_existing_levels_file_refused_before_any_work(tmp_path, case, random_model, segment_gives_label, capsys):
    out = tmp_path / "case_seg.nii.gz"
    (tmp_path / "case_seg.seg.nrrd").write_bytes(b"keep me")
    argv = ["segment", str(case[0]), "-o", str(out), "--model", str(random_model), "--device", "cpu", "--levels"]
    assert main(argv) == 2
    assert not segment_gives_label  # refused before segmenting
    assert "case_seg.seg.nrrd" in capsys.readouterr().err
    assert _names(tmp_path) == ["case_seg.seg.nrrd"] and (tmp_path / "case_seg.seg.nrrd").read_bytes() == b"keep me"
    assert main(argv + ["--overwrite"]) == 0
    assert _names(tmp_path) == sorted(("case_seg.nii.gz",) + LEVEL_FILES)


def test_a_failed_write_rolls_every_output_back(tmp_path, case, random_model, segment_gives_label, monkeypatch, capsys):
    import spineseg.levels.outputs as outputs
    from spineseg.errors import InputError

    real = outputs.write_bytes_atomic

    def fail_on_seg(data, path, **kw):
        if str(path).endswith(".seg.nrrd"):
            raise InputError(f"{path}: cannot write file (No space left on device)")
        return real(data, path, **kw)

    monkeypatch.setattr(outputs, "write_bytes_atomic", fail_on_seg)
    out = tmp_path / "o" / "case_seg.nii.gz"
    assert main(["segment", str(case[0]), "-o", str(out), "--model", str(random_model), "--device", "cpu",
                 "--levels"]) == 2
    assert not (tmp_path / "o").exists() or _names(tmp_path / "o") == []


def test_levels_refused_for_a_binary_label(tmp_path, case, random_model, capsys):
    out = tmp_path / "case_seg.nii.gz"
    assert main(["segment", str(case[0]), "-o", str(out), "--model", str(random_model), "--device", "cpu",
                 "--levels", "--binary"]) == 2
    assert "--levels" in capsys.readouterr().err and _names(tmp_path) == []
