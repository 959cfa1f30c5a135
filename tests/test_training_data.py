"""Training data: discovery, dataset.json, validation errors naming the case, cache, folds, windows."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
import SimpleITK as sitk

from spineseg.errors import InputError

SPACING = (0.8, 0.8, 4.4)  # x (anterior->posterior), y (superior->inferior), z (slices)


def toy_case(seed: int, size: Sequence[int] = (40, 48, 6)):
    """A small sagittal volume with vertebra/disc/canal-like boxes: (image, label) as SimpleITK images.

    Classes differ in intensity and position (vertebrae and discs alternate along y, the canal is
    a bright band behind them), plus noise, so a tiny network can learn them in a few steps.
    """
    rng = np.random.default_rng(seed)
    nx, ny, nz = size
    label = np.zeros((nz, ny, nx), dtype=np.uint8)
    x0 = int(rng.integers(4, 8))
    y = int(rng.integers(2, 5))
    while y + 6 < ny:
        label[1:nz - 1, y:y + 5, x0:x0 + 14] = 1
        label[1:nz - 1, y + 5:y + 7, x0 + 1:x0 + 13] = 2
        y += 7
    label[1:nz - 1, :, x0 + 16:x0 + 20] = 3
    means = np.array([20.0, 60.0, 110.0, 160.0])
    image = means[label] + rng.normal(0, 6.0, label.shape) + 10.0
    img = sitk.GetImageFromArray(image.astype(np.float32))
    lab = sitk.GetImageFromArray(label)
    for im in (img, lab):
        im.SetSpacing(SPACING)
    return img, lab


def write_toy_cases(folder: Path, n: int, size: Sequence[int] = (40, 48, 6), ext: str = ".nii.gz") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img, lab = toy_case(i, size)
        sitk.WriteImage(img, str(folder / f"case{i:02d}_image{ext}"))
        sitk.WriteImage(lab, str(folder / f"case{i:02d}_label{ext}"))
    return folder
