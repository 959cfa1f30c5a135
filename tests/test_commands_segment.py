"""``spineseg segment`` end to end: outputs, JSON lines, and every bad-input path (exit 2, nothing written)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from spineseg.cli import main
from spineseg.progress import parse_json_line
from test_inference_fixtures import dice, random_model, small_phantom, trained_model  # noqa: F401  (fixtures)


def mr_like(path: Path, size=(48, 40, 5), spacing=(0.8, 0.8, 4.4), seed=0, direction=None) -> sitk.Image:
    rng = np.random.default_rng(seed)
    arr = rng.gamma(2.0, 100.0, size=size[::-1]).astype(np.float32)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin((3.0, -7.0, 11.0))
    if direction is not None:
        img.SetDirection(direction)
    sitk.WriteImage(img, str(path))
    return sitk.ReadImage(str(path))  # as stored (NIfTI keeps float32 geometry)


def events(out: str):
    return [e for e in (parse_json_line(line) for line in out.splitlines()) if e is not None]


def files(folder: Path):
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def test_json_progress_done_and_geometry(tmp_path, random_model, capsys):
    src = tmp_path / "case.nrrd"  # NRRD stores geometry in full double precision; NIfTI rounds to float32
    oblique = (0.0, 0.0, 1.0, 0.96, 0.28, 0.0, -0.28, 0.96, 0.0)  # permuted and rotated axes
    img = mr_like(src, direction=oblique)
    out = tmp_path / "out" / "label.nrrd"
    rc = main(["segment", str(src), "-o", str(out), "--model", str(random_model), "--device", "cpu", "--json"])
    assert rc == 0
    evs = events(capsys.readouterr().out)
    fractions = [e["fraction"] for e in evs if e["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    done = evs[-1]
    assert done["event"] == "done" and done["outputs"][0]["output"] == str(out)
    assert [c["name"] for c in done["outputs"][0]["classes"]] == ["vertebra", "intervertebral disc", "spinal canal"]
    lab = sitk.ReadImage(str(out))
    for attr in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(lab, attr)() == getattr(img, attr)()


def test_folder_output_names_and_probabilities(tmp_path, random_model):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(2):
        mr_like(inputs / f"c{i}.nii.gz", seed=i)
    out = tmp_path / "out"
    rc = main(["segment", str(inputs), "-o", str(out), "--model", str(random_model), "--device", "cpu",
               "--probabilities", "--binary", "--keep-largest"])
    assert rc == 0
    assert files(out) == ["c0_seg.nii.gz", "c0_seg_probabilities.nii.gz", "c1_seg.nii.gz", "c1_seg_probabilities.nii.gz"]
    prob = sitk.ReadImage(str(out / "c0_seg_probabilities.nii.gz"))
    assert prob.GetNumberOfComponentsPerPixel() == 4
    assert set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(out / "c0_seg.nii.gz"))))) <= {0, 1}


def test_image_smaller_than_window_is_padded(tmp_path, random_model):
    src = tmp_path / "tiny.nii.gz"
    img = mr_like(src, size=(20, 17, 5))  # < 4 slices trips prep's foreground_mask (reported)
    out = tmp_path / "tiny_seg.nii.gz"
    assert main(["segment", str(src), "-o", str(out), "--model", str(random_model), "--device", "cpu"]) == 0
    assert sitk.ReadImage(str(out)).GetSize() == img.GetSize()


def test_non_mr_intensities_warn(tmp_path, random_model, capsys):
    src = tmp_path / "ct.nii.gz"
    img = mr_like(src)
    sitk.WriteImage(sitk.Cast(img, sitk.sitkFloat32) - 1024.0, str(src))
    assert main(["segment", str(src), "-o", str(tmp_path / "s.nii.gz"), "--model", str(random_model),
                 "--device", "cpu"]) == 0
    assert "MR" in capsys.readouterr().err


def _fails(argv, capsys, code=2):
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc == code, captured.err
    lines = [line for line in captured.err.splitlines() if line.startswith("spineseg: error")]
    assert len(lines) == 1
    return lines[0]


def test_no_model_and_none_bundled(tmp_path, monkeypatch, capsys):
    import spineseg.modelfile

    monkeypatch.setattr(spineseg.modelfile, "default_model_path", lambda: None)
    src = tmp_path / "a.nii.gz"
    mr_like(src)
    msg = _fails(["segment", str(src), "-o", str(tmp_path / "o" / "s.nii.gz")], capsys)
    assert "--model" in msg and files(tmp_path) == ["a.nii.gz"]


def test_model_class_mismatch(tmp_path, random_model, capsys):
    import shutil

    bad = tmp_path / "bad_model"
    shutil.copytree(random_model, bad)
    header = json.loads((bad / "model.json").read_text())
    header["classes"] = header["classes"][:2]
    (bad / "model.json").write_text(json.dumps(header))
    src = tmp_path / "a.nii.gz"
    mr_like(src)
    msg = _fails(["segment", str(src), "-o", str(tmp_path / "s.nii.gz"), "--model", str(bad)], capsys)
    assert "mismatch" in msg and not (tmp_path / "s.nii.gz").exists()


def test_output_exists_refused_unless_overwrite(tmp_path, random_model, capsys):
    src = tmp_path / "a.nii.gz"
    mr_like(src)
    out = tmp_path / "s.nii.gz"
    out.write_bytes(b"keep me")
    argv = ["segment", str(src), "-o", str(out), "--model", str(random_model), "--device", "cpu"]
    assert "--overwrite" in _fails(argv, capsys)
    assert out.read_bytes() == b"keep me"
    assert main(argv + ["--overwrite"]) == 0 and sitk.ReadImage(str(out)).GetSize() == (48, 40, 5)


def test_output_folder_not_writable(tmp_path, random_model, capsys):
    src = tmp_path / "a.nii.gz"
    mr_like(src)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    msg = _fails(["segment", str(src), "-o", str(blocker / "sub" / "s.nii.gz"), "--model", str(random_model)], capsys)
    assert "folder" in msg


def test_disk_full_leaves_nothing(tmp_path, random_model, monkeypatch, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(2):
        mr_like(inputs / f"c{i}.nii.gz", seed=i)
    real = sitk.WriteImage
    calls = []

    def full_disk(image, path, *args):
        calls.append(path)
        if len(calls) == 2:  # the second output: the disk is full
            Path(path).write_bytes(b"partial")
            raise RuntimeError("ITK ERROR: could not write: No space left on device")
        return real(image, path, *args)

    monkeypatch.setattr(sitk, "WriteImage", full_disk)
    out = tmp_path / "out"
    msg = _fails(["segment", str(inputs), "-o", str(out), "--model", str(random_model), "--device", "cpu",
                  "--json"], capsys)
    assert "space" in msg and files(out) == []  # first output rolled back, temp file removed


def test_cancel_writes_nothing_and_exits_130(tmp_path, random_model, monkeypatch, capsys):
    from spineseg.commands import segment

    calls = []
    monkeypatch.setattr(segment.CancelFlag, "__call__", lambda self: bool(calls.append(1)) or len(calls) > 1)
    src = tmp_path / "a.nii.gz"
    mr_like(src, size=(96, 96, 5))
    out = tmp_path / "o"
    rc = main(["segment", str(src), "-o", str(out), "--model", str(random_model), "--device", "cpu", "--json",
               "--batch", "1"])
    assert rc == 130
    evs = events(capsys.readouterr().out)
    assert evs[-1]["event"] == "error" and evs[-1]["exit_code"] == 130
    assert files(out) == []


def test_trained_model_segments_phantom(tmp_path, trained_model):
    image, label = small_phantom(7)
    src = tmp_path / "phantom.nii.gz"
    sitk.WriteImage(image, str(src))
    out = tmp_path / "seg.nii.gz"
    assert main(["segment", str(src), "-o", str(out), "--model", str(trained_model), "--device", "cpu"]) == 0
    got, ref = sitk.GetArrayFromImage(sitk.ReadImage(str(out))), sitk.GetArrayFromImage(label)
    assert dice(got > 0, ref > 0) >= 0.8


def test_overlay_png_written_and_planned(tmp_path, trained_model, capsys):
    image, _ = small_phantom(7)
    src = tmp_path / "phantom.nii.gz"
    sitk.WriteImage(image, str(src))
    out = tmp_path / "seg.nii.gz"
    overlay = tmp_path / "seg_overlay.png"
    overlay.write_bytes(b"keep me")  # an existing overlay is refused before any work, like the label map
    argv = ["segment", str(src), "-o", str(out), "--model", str(trained_model), "--device", "cpu", "--overlay",
            "--json"]
    assert "--overwrite" in _fails(argv, capsys)
    assert overlay.read_bytes() == b"keep me" and not out.exists()
    assert main(argv + ["--overwrite"]) == 0
    done = events(capsys.readouterr().out)[-1]
    assert done["outputs"][0]["overlay"] == str(overlay)
    png = overlay.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_overlay_without_matplotlib_fails_before_work(tmp_path, random_model, monkeypatch, capsys):
    import spineseg.report

    monkeypatch.setattr(spineseg.report, "matplotlib_available", lambda: False)
    src = tmp_path / "a.nii.gz"
    mr_like(src)
    msg = _fails(["segment", str(src), "-o", str(tmp_path / "s.nii.gz"), "--model", str(random_model),
                  "--overlay"], capsys)
    assert "matplotlib" in msg and files(tmp_path) == ["a.nii.gz"]


def test_near_isotropic_warning_reaches_stderr_and_the_json_event_once(tmp_path, random_model, capsys):
    """The frame is computed once per image, so the guess about the slice axis is said once, and
    programs reading --json get it in the done event."""
    src = tmp_path / "iso.nii.gz"
    mr_like(src, spacing=(1.0, 1.0, 1.1))
    out = tmp_path / "iso_seg.nii.gz"
    assert main(["segment", str(src), "-o", str(out), "--model", str(random_model), "--device", "cpu"]) == 0
    assert capsys.readouterr().err.count("near-isotropic") == 1
    assert main(["segment", str(src), "-o", str(out), "--model", str(random_model), "--device", "cpu", "--json",
                 "--overwrite"]) == 0
    done = [e for e in events(capsys.readouterr().out) if e["event"] == "done"][0]
    notes = [w for o in done["outputs"] for w in o.get("warnings", [])]
    assert len([w for w in notes if "near-isotropic" in w]) == 1
