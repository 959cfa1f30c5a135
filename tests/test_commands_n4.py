"""``spineseg n4``: success, outputs, and every bad-input path (exit 2, nothing written, input untouched)."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import SimpleITK as sitk

from spineseg.cli import main


def write_volume(path, size=(48, 40, 5), seed=0):
    rng = np.random.default_rng(seed)
    nx, ny, nz = size
    z, y, x = np.meshgrid(np.linspace(-1, 1, nz), np.linspace(-1, 1, ny), np.linspace(-1, 1, nx), indexing="ij")
    body = (x / 0.8) ** 2 + (y / 0.9) ** 2 < 1
    array = np.where(body, 400.0, 5.0) * np.exp(0.3 * y) + rng.normal(0, 5, body.shape)
    img = sitk.GetImageFromArray(np.abs(array).astype(np.float32))
    img.SetSpacing((0.8, 0.8, 4.4))
    img.SetOrigin((1.0, 2.0, 3.0))
    sitk.WriteImage(img, str(path))
    return img


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture()
def source(tmp_path):
    src = tmp_path / "in" / "case.nii.gz"
    src.parent.mkdir()
    write_volume(src)
    return src


def test_n4_cli_writes_corrected_image_and_field(tmp_path, source, capsys):
    before = digest(source)
    out = tmp_path / "out" / "corrected.nii.gz"
    field = tmp_path / "out" / "field.nrrd"
    rc = main(["n4", str(source), "-o", str(out), "--bias-field", str(field), "--iterations", "10,10",
               "--shrink", "2", "--json"])
    assert rc == 0
    assert digest(source) == before
    img, corrected, bias = (sitk.ReadImage(str(p)) for p in (source, out, field))
    for result in (corrected, bias):
        assert result.GetSize() == img.GetSize()
        assert result.GetSpacing() == pytest.approx(img.GetSpacing())
        assert result.GetOrigin() == pytest.approx(img.GetOrigin())
        assert result.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_allclose(sitk.GetArrayFromImage(corrected) * sitk.GetArrayFromImage(bias),
                               sitk.GetArrayFromImage(img), rtol=1e-4, atol=1e-3)
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    progress = [e["fraction"] for e in events if e["event"] == "progress"]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert events[-1]["event"] == "done" and events[-1]["outputs"][0]["output"] == str(out)
    assert files(out.parent) == ["corrected.nii.gz", "field.nrrd"]  # no temporary files left


def test_n4_cli_no_mask_and_mask_file(tmp_path, source):
    out = tmp_path / "a.nii.gz"
    assert main(["n4", str(source), "-o", str(out), "--no-mask", "--iterations", "5"]) == 0
    mask = tmp_path / "mask.nii.gz"
    img = sitk.ReadImage(str(source))
    sitk.WriteImage(sitk.Cast(img > 100, sitk.sitkUInt8), str(mask))
    out2 = tmp_path / "b.nii.gz"
    assert main(["n4", str(source), "-o", str(out2), "--mask", str(mask), "--iterations", "5"]) == 0
    assert out2.exists()


def test_n4_cli_refuses_to_overwrite(tmp_path, source, capsys):
    out = tmp_path / "out.nii.gz"
    out.write_bytes(b"keep me")
    rc = main(["n4", str(source), "-o", str(out), "--iterations", "5"])
    assert rc == 2
    assert out.read_bytes() == b"keep me"
    err = capsys.readouterr().err
    assert err.startswith("spineseg: error:") and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert main(["n4", str(source), "-o", str(out), "--iterations", "5", "--overwrite"]) == 0
    assert sitk.ReadImage(str(out)).GetSize() == sitk.ReadImage(str(source)).GetSize()


def test_n4_cli_existing_field_blocks_everything(tmp_path, source):
    out = tmp_path / "out.nii.gz"
    field = tmp_path / "field.nii.gz"
    field.write_bytes(b"old")
    assert main(["n4", str(source), "-o", str(out), "--bias-field", str(field), "--iterations", "5"]) == 2
    assert not out.exists() and field.read_bytes() == b"old"


@pytest.mark.parametrize("problem", ["missing", "not-an-image", "constant", "mask-size", "mask-and-no-mask",
                                     "same-output", "bad-extension"])
def test_n4_cli_bad_input(tmp_path, source, capsys, problem):
    out = tmp_path / "out" / "out.nii.gz"
    args = ["n4", str(source), "-o", str(out), "--iterations", "5"]
    if problem == "missing":
        args[1] = str(tmp_path / "nope.nii.gz")
    elif problem == "not-an-image":
        bad = tmp_path / "bad.nii.gz"
        bad.write_bytes(b"this is not an image")
        args[1] = str(bad)
    elif problem == "constant":
        flat = tmp_path / "flat.nii.gz"
        sitk.WriteImage(sitk.Image(16, 16, 4, sitk.sitkFloat32) + 3.0, str(flat))
        args[1] = str(flat)
    elif problem == "mask-size":
        mask = tmp_path / "mask.nii.gz"
        sitk.WriteImage(sitk.Image(8, 8, 2, sitk.sitkUInt8) + 1, str(mask))
        args += ["--mask", str(mask)]
    elif problem == "mask-and-no-mask":
        args += ["--mask", str(source), "--no-mask"]
    elif problem == "same-output":
        args += ["--bias-field", str(out)]
    elif problem == "bad-extension":
        args[3] = str(tmp_path / "out" / "out.png")
    before = digest(source)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("spineseg: error:") and len(err.splitlines()) == 1, err
    assert digest(source) == before
    assert not out.exists() and not (tmp_path / "out" / "out.png").exists()
    if out.parent.exists():
        assert files(out.parent) == []


@pytest.mark.parametrize("option", [["--iterations", "0,5"], ["--iterations", "a,b"], ["--shrink", "0"],
                                    ["--convergence", "-1"]])
def test_n4_cli_bad_options_exit_2(tmp_path, source, option):
    with pytest.raises(SystemExit) as exc:
        main(["n4", str(source), "-o", str(tmp_path / "o.nii.gz")] + option)
    assert exc.value.code == 2
    assert not (tmp_path / "o.nii.gz").exists()
