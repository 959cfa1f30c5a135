"""The bundled sample: present, real-sized, labelled with the model's classes, and found like the model."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from spineseg.samples import bundled_sample


def test_bundled_sample_is_a_labelled_sagittal_volume():
    sample = bundled_sample()
    assert sample is not None, "Resources/Samples lost its sample"
    image, label = (sitk.ReadImage(str(p)) for p in sample)
    assert image.GetSize() == label.GetSize() == (416, 600, 19)
    assert image.GetSpacing() == label.GetSpacing()
    assert set(np.unique(sitk.GetArrayViewFromImage(label)).tolist()) == {0, 1, 2, 3}
    assert sum(p.stat().st_size for p in sample) < 5_000_000  # "a few MB"


def test_sample_credit_names_spider_and_the_licence():
    image, _ = bundled_sample()
    text = (image.parent / "README.md").read_text()
    assert "SPIDER" in text and "CC BY 4.0" in text and "spider_018" in text
