"""SpineSegUNet/Scripts/segment_folder.py over a folder, run as Slicer runs a --python-script."""
from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "SpineSegUNet" / "Scripts" / "segment_folder.py"
MODEL = ROOT / "Resources" / "Models" / "spineseg-default"


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_folder_gives_one_seg_nrrd_per_case_and_a_flat_scene(harness, tmp_path, monkeypatch):
    import slicer
    from spineseg.phantom import make_phantom

    inputs = tmp_path / "in"
    inputs.mkdir()
    cases = 3
    for seed in range(cases):
        image = make_phantom(size=(256, 256, 12), spacing=(1.1, 1.1, 4.4), seed=seed, supersample=1).image
        sitk.WriteImage(image, str(inputs / f"case{seed}.nii.gz"))
    out = tmp_path / "out"
    seen = []  # (nodes in the scene, resident MB) after each case
    real_print = print

    def spy(*args, **kwargs):  # the script prints "  -> target" after each case; the scene is flat by then?
        real_print(*args, **kwargs)
        if args and str(args[0]).startswith("[") and seen is not None:
            seen.append((harness.scene.GetNumberOfNodes(), rss_mb()))

    before = harness.node_ids()
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--input", str(inputs), "--output", str(out), "--model",
                                      str(MODEL), "--device", "cpu", "--no-n4", "--no-levels"])
    runpy.run_path(str(SCRIPT), init_globals={"print": spy}, run_name="__main__")
    seen.append((harness.scene.GetNumberOfNodes(), rss_mb()))
    assert harness.app.exit_codes == [0]
    written = sorted(p.name for p in out.iterdir())
    assert written == [f"case{i}.seg.nrrd" for i in range(cases)]
    # each file is a real segmentation with the model's segments
    reread = harness.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    reader = slicer.vtkMRMLSegmentationStorageNode()
    reader.SetFileName(str(out / "case0.seg.nrrd"))
    assert reader.ReadData(reread) and reread.GetSegmentation().GetNumberOfSegments() == 3
    harness.scene.RemoveNode(reread.GetDisplayNode())
    harness.scene.RemoveNode(reread)
    assert harness.node_ids() == before, harness.node_classes(harness.node_ids() - before)
    counts = [n for n, _ in seen]
    assert len(set(counts)) == 1, counts  # the scene before each case: the same
    growth = seen[-1][1] - seen[1][1]  # from the start of the second case to the end
    assert growth < 20.0, f"memory grew {growth:.1f} MB over {cases - 1} cases: {seen}"


def test_existing_outputs_refused_without_overwrite(harness, tmp_path, monkeypatch):
    from spineseg.phantom import make_phantom

    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    out.mkdir()
    sitk.WriteImage(make_phantom(size=(48, 48, 12), spacing=(2.4, 2.4, 4.4), supersample=1).image,
                    str(inputs / "a.nrrd"))
    (out / "a.seg.nrrd").write_bytes(b"keep me")
    before = harness.node_ids()
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--input", str(inputs), "--output", str(out), "--model",
                                      str(MODEL), "--no-n4"])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    assert harness.app.exit_codes == [2]
    assert (out / "a.seg.nrrd").read_bytes() == b"keep me"
    assert harness.node_ids() == before
    assert np.array_equal(sorted(p.name for p in out.iterdir()), ["a.seg.nrrd"])


def test_levels_give_named_segments_and_the_measurements_table(harness, tmp_path, monkeypatch, capsys):
    """Levels on by default: per-level segments in the .seg.nrrd, the table with its units beside it, the
    review line printed, and the same structures in both files."""
    import csv

    import slicer
    from spineseg.phantom import make_phantom

    pytest.importorskip("slicerio", reason="segment --levels writes the .seg.nrrd with slicerio")
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    sitk.WriteImage(make_phantom(seed=2, size=(220, 220, 12), spacing=(1.38, 1.38, 4.4)).image,
                    str(inputs / "spine.nrrd"))
    before = harness.node_ids()
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--input", str(inputs), "--output", str(out), "--model",
                                      str(MODEL), "--device", "cpu", "--no-n4"])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    assert harness.app.exit_codes == [0], capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "Review" in printed, printed
    assert sorted(p.name for p in out.iterdir()) == ["spine.measurements.schema.tsv", "spine.measurements.tsv",
                                                     "spine.seg.nrrd"]
    reread = harness.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    reader = slicer.vtkMRMLSegmentationStorageNode()
    reader.SetFileName(str(out / "spine.seg.nrrd"))
    assert reader.ReadData(reread)
    segmentation = reread.GetSegmentation()
    names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
    harness.scene.RemoveNode(reread.GetDisplayNode())
    harness.scene.RemoveNode(reread)
    with open(out / "spine.measurements.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert [r["name"] for r in rows] == names and "L4-L5" in names and "spinal canal" in names
    with open(out / "spine.measurements.schema.tsv", newline="") as fh:
        units = {r["columnName"]: r.get("unitLabel") for r in csv.DictReader(fh, delimiter="\t")}
    assert units["anterior_height_mm"] == "mm" and units["volume_mm3"] == "mm3"
    assert harness.node_ids() == before, harness.node_classes(harness.node_ids() - before)
