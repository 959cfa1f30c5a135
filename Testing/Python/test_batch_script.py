"""SpineSegUNet/Scripts/segment_folder.py over a folder, run as Slicer runs a --python-script."""
from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

import numpy as np
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
                                      str(MODEL), "--device", "cpu", "--no-n4"])
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
