"""Image I/O: every supported format reads back, writes are atomic, bad input is refused in one line."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from spineseg.cli import main
from spineseg.errors import InputError
from spineseg.io import list_inputs, read_image, write_image


def _volume(shape=(6, 20, 16), dtype=np.float32, seed=0) -> sitk.Image:
    rng = np.random.default_rng(seed)
    img = sitk.GetImageFromArray((rng.random(shape) * 100).astype(dtype))
    img.SetSpacing((0.5, 0.5, 4.0))
    img.SetOrigin((1.0, -2.0, 3.5))
    img.SetDirection((0, 0, 1, 1, 0, 0, 0, -1, 0))
    return img


def _same(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_write_read_round_trip(tmp_path: Path, ext: str) -> None:
    img = _volume()
    out = write_image(img, tmp_path / f"vol{ext}")
    _same(img, read_image(out))
    assert [p.name for p in tmp_path.iterdir()] == [f"vol{ext}"]  # no temporary file left behind


def test_reads_mhd(tmp_path: Path) -> None:
    img = _volume()
    sitk.WriteImage(img, str(tmp_path / "vol.mhd"))
    _same(img, read_image(tmp_path / "vol.mhd"))


def _write_dicom_series(folder: Path, img: sitk.Image, series_uid: str) -> None:
    """GDCM's writer switches the process to the C locale (later text I/O would be ASCII-only): put it back."""
    import locale

    saved = locale.setlocale(locale.LC_ALL)
    try:
        _write_dicom_slices(folder, img, series_uid)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_dicom_slices(folder: Path, img: sitk.Image, series_uid: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    img = sitk.Cast(img, sitk.sitkInt16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = img.GetDirection()
    for k in range(img.GetDepth()):
        sl = img[:, :, k]
        pos = img.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in [
            ("0008|0060", "MR"),
            ("0020|000d", "1.2.826.0.1.3680043.2.1125.1"),
            ("0020|000e", series_uid),
            ("0020|0013", str(k + 1)),
            ("0020|0032", "\\".join(f"{p:.6f}" for p in pos)),
            ("0020|0037", "\\".join(f"{d:.6f}" for d in (direction[0], direction[3], direction[6],
                                                        direction[1], direction[4], direction[7]))),
            ("0028|0030", f"{img.GetSpacing()[1]:.6f}\\{img.GetSpacing()[0]:.6f}"),
            ("0018|0050", f"{img.GetSpacing()[2]:.6f}"),
            ("0008|0018", f"{series_uid}.{k + 1}"),
        ]:
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{series_uid[-4:]}_{k:03d}.dcm"))
        writer.Execute(sl)


def test_reads_dicom_series(tmp_path: Path) -> None:
    img = _volume(shape=(5, 12, 10))
    img.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, 1))
    _write_dicom_series(tmp_path / "dcm", img, "1.2.826.0.1.3680043.2.1125.2.1111")
    got = read_image(tmp_path / "dcm")
    assert got.GetSize() == img.GetSize()
    np.testing.assert_allclose(got.GetSpacing(), img.GetSpacing(), rtol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(got),
                                  sitk.GetArrayFromImage(sitk.Cast(img, sitk.sitkInt16)))
    assert list_inputs([tmp_path / "dcm"]) == [tmp_path / "dcm"]


def test_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    target = tmp_path / "out.nii.gz"
    write_image(_volume(seed=1), target)
    before = target.read_bytes()
    with pytest.raises(InputError, match="output exists.*--overwrite"):
        write_image(_volume(seed=2), target)
    assert target.read_bytes() == before
    write_image(_volume(seed=2), target, overwrite=True)
    assert target.read_bytes() != before


def test_failed_write_leaves_nothing_and_keeps_old_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "out.nrrd"
    write_image(_volume(seed=1), target)
    before = target.read_bytes()

    def disk_full(image, path, compress):
        Path(path).write_bytes(b"partial")
        raise RuntimeError("No space left on device")

    monkeypatch.setattr(sitk, "WriteImage", disk_full)
    with pytest.raises(InputError, match="cannot write image.*No space left"):
        write_image(_volume(seed=2), target, overwrite=True)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nrrd"]


# ---- bad input: one test per case, each through the CLI (exit 2, one line naming the file) ----

def _cli_error(capsys, *argv: str) -> str:
    rc = main(list(argv))
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("spineseg: error: "), err
    return err


def test_missing_file(capsys, tmp_path: Path) -> None:
    err = _cli_error(capsys, "info", str(tmp_path / "nope.nii.gz"))
    assert "nope.nii.gz: file not found" in err


def test_truncated_gzip_nifti(capsys, tmp_path: Path) -> None:
    good = write_image(_volume(shape=(6, 64, 64)), tmp_path / "good.nii.gz")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    before = bad.read_bytes()
    err = _cli_error(capsys, "info", str(bad))
    assert "bad.nii.gz: file is truncated or corrupt" in err
    assert bad.read_bytes() == before


def test_not_an_image(capsys, tmp_path: Path) -> None:
    junk = tmp_path / "junk.nii"
    junk.write_bytes(os.urandom(300))
    assert "junk.nii: cannot read image" in _cli_error(capsys, "info", str(junk))


def test_unsupported_extension(capsys, tmp_path: Path) -> None:
    f = tmp_path / "notes.txt"
    f.write_text("hello")
    assert "unsupported file type" in _cli_error(capsys, "info", str(f))


def test_2d_image(capsys, tmp_path: Path) -> None:
    img = sitk.GetImageFromArray(np.random.rand(32, 32).astype(np.float32))
    sitk.WriteImage(img, str(tmp_path / "flat.nii.gz"))
    assert "is 2D" in _cli_error(capsys, "info", str(tmp_path / "flat.nii.gz"))


def test_4d_image(capsys, tmp_path: Path) -> None:
    img = sitk.GetImageFromArray(np.random.rand(3, 4, 8, 8).astype(np.float32), isVector=False)
    sitk.WriteImage(img, str(tmp_path / "time.nii.gz"))
    assert "is 4D" in _cli_error(capsys, "info", str(tmp_path / "time.nii.gz"))


def test_multi_component_image(capsys, tmp_path: Path) -> None:
    img = sitk.GetImageFromArray(np.random.rand(4, 8, 8, 3).astype(np.float32), isVector=True)
    sitk.WriteImage(img, str(tmp_path / "rgb.nrrd"))
    assert "3 components per voxel" in _cli_error(capsys, "info", str(tmp_path / "rgb.nrrd"))


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_non_finite_voxels(capsys, tmp_path: Path, bad_value: float) -> None:
    a = np.random.rand(4, 8, 8).astype(np.float32)
    a[1, 2, 3] = bad_value
    sitk.WriteImage(sitk.GetImageFromArray(a), str(tmp_path / "nan.nrrd"))  # ITK zero-fills NaN in NIfTI
    assert "1 NaN or infinite voxels" in _cli_error(capsys, "info", str(tmp_path / "nan.nrrd"))


def test_constant_image(capsys, tmp_path: Path) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(np.full((4, 8, 8), 7, np.int16)), str(tmp_path / "c.nii.gz"))
    assert "image is constant" in _cli_error(capsys, "info", str(tmp_path / "c.nii.gz"))


def test_empty_dicom_folder(capsys, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert "no DICOM series found" in _cli_error(capsys, "info", str(tmp_path / "empty"))


def test_mixed_dicom_folder(capsys, tmp_path: Path) -> None:
    img = _volume(shape=(3, 8, 8))
    img.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, 1))
    _write_dicom_series(tmp_path / "mixed", img, "1.2.826.0.1.3680043.2.1125.2.1111")
    _write_dicom_series(tmp_path / "mixed", img, "1.2.826.0.1.3680043.2.1125.2.2222")
    assert "holds 2 DICOM series" in _cli_error(capsys, "info", str(tmp_path / "mixed"))


def test_output_folder_not_writable(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(InputError, match="cannot create output folder"):
        write_image(_volume(), blocker / "sub" / "out.nii.gz")
    assert blocker.read_text() == "a file where a folder should be"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores folder permissions")
def test_output_folder_read_only(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(InputError, match="not writable"):
            write_image(_volume(), ro / "out.nii.gz")
    finally:
        ro.chmod(0o700)


def test_info_reports_geometry(capsys, tmp_path: Path) -> None:
    path = write_image(_volume(), tmp_path / "v.nrrd")
    assert main(["info", "--json", str(path)]) == 0
    import json

    d = json.loads(capsys.readouterr().out)
    assert d["size"] == [16, 20, 6]
    assert d["slice_axis"] == "z" and d["slices"] == 6
    assert d["orientation"] == "PIL"
    assert d["canonical_shape_dhw"] == [6, 20, 16]
    assert d["intensity"]["max"] > d["intensity"]["min"]


def test_written_files_get_the_usual_permissions(tmp_path: Path) -> None:
    from spineseg.io import write_bytes_atomic

    umask = os.umask(0o022)
    try:
        a = write_image(_volume(), tmp_path / "a.nii.gz")
        b = write_bytes_atomic(b"{}", tmp_path / "b.json")
    finally:
        os.umask(umask)
    assert a.stat().st_mode & 0o777 == 0o644
    assert b.stat().st_mode & 0o777 == 0o644


def test_one_strict_json_writer(tmp_path):
    """NaN is null, numpy values are numbers, other objects their text; the file is written atomically."""
    import json as _json

    from spineseg.io import json_text, write_json

    doc = {"dsc": float("nan"), "n": np.int64(3), "x": np.float32(0.5), "path": Path("a/b"), 1: [np.inf]}
    assert _json.loads(json_text(doc)) == {"dsc": None, "n": 3, "x": 0.5, "path": "a/b", "1": [None]}
    assert json_text({"a": [1, 2]}, indent=None, compact=True) == '{"a":[1,2]}'
    out = write_json(doc, tmp_path / "doc.json")
    assert out.read_text().endswith("}\n") and "NaN" not in out.read_text()
    with pytest.raises(InputError, match="exists"):
        write_json({}, out)
