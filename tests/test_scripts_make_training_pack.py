"""scripts/make_training_pack.py: crop to the labels, resample in-plane, keep geometry, labels and pixel type."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from script_modules import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("make_training_pack")


def case(folder: Path, cid: str = "c1"):
    """uint8 sagittal case: 10 slices along x (1 mm), 0.5 mm in-plane, labels in a block off-centre."""
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, size=(80, 100, 10), dtype=np.uint8)  # z, y, x
    lab = np.zeros(arr.shape, np.uint8)
    lab[20:40, 30:60, 2:8] = 1
    lab[40:44, 30:60, 2:8] = 2
    lab[20:44, 62:66, 2:8] = 3
    image, label = sitk.GetImageFromArray(arr), sitk.GetImageFromArray(lab)
    for im in (image, label):
        im.SetSpacing((1.0, 0.5, 0.5))
        im.SetOrigin((5.0, -3.0, 2.0))
    folder.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(folder / f"{cid}_image.nii.gz"))
    sitk.WriteImage(label, str(folder / f"{cid}_label.nii.gz"))
    return image, label


def test_pack_crops_resamples_and_keeps_the_physical_position(script, tmp_path, capsys):
    image, label = case(tmp_path / "data")
    assert script.main([str(tmp_path / "data"), "-o", str(tmp_path / "pack"), "--inplane-mm", "1.0",
                        "--margin-mm", "2"]) == 0
    assert "1 cases" in capsys.readouterr().out
    pimg = sitk.ReadImage(str(tmp_path / "pack" / "c1_image.nii.gz"))
    plab = sitk.ReadImage(str(tmp_path / "pack" / "c1_label.nii.gz"))
    assert pimg.GetPixelID() == sitk.sitkUInt8 and plab.GetPixelID() == sitk.sitkUInt8
    assert pimg.GetSpacing() == pytest.approx((1.0, 1.0, 1.0)) and pimg.GetSize()[0] == 10  # slices kept
    # y: labels 30..65 plus 4 voxels of margin -> 26..70 (44 voxels at 0.5 mm) -> 22 at 1 mm
    assert pimg.GetSize()[1] == 22 and pimg.GetSize()[2] == 16
    assert set(np.unique(sitk.GetArrayViewFromImage(plab))) == {0, 1, 2, 3}
    # the packed labels sit where the originals were: compare the canal's centre in physical space
    def centre(img, value):
        idx = np.argwhere(sitk.GetArrayViewFromImage(img) == value).mean(axis=0)[::-1]
        return np.asarray(img.TransformContinuousIndexToPhysicalPoint(idx.tolist()))
    assert np.allclose(centre(plab, 3), centre(label, 3), atol=0.5)


def test_existing_pack_is_not_overwritten(script, tmp_path, capsys):
    case(tmp_path / "data")
    argv = [str(tmp_path / "data"), "-o", str(tmp_path / "pack")]
    assert script.main(argv) == 0
    assert script.main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert script.main(argv + ["--overwrite"]) == 0
