"""N4 bias correction and intensity normalisation on small synthetic volumes."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from spineseg.errors import InputError
from spineseg.preprocessing import (
    PreprocessingConfig, block_any, estimate_log_bias_field, expand_linear, expand_nearest, foreground_mask, n4_correct,
    normalize_intensity, relative_l2, shrink_array, shrink_factors)


def tissue_volume(size=(128, 128, 6), spacing=(1.4, 1.4, 4.4), seed=0):
    """Piecewise-constant 'body' (an ellipse with three tissues) in a dark, noisy background.

    Returns (clean image, biased image, true multiplicative field, body mask), arrays (z, y, x).
    """
    rng = np.random.default_rng(seed)
    nx, ny, nz = size
    z, y, x = np.meshgrid(np.linspace(-1, 1, nz), np.linspace(-1, 1, ny), np.linspace(-1, 1, nx), indexing="ij")
    body = (x / 0.85) ** 2 + (y / 0.9) ** 2 < 1
    clean = np.where(body, 400.0, 5.0)
    clean[body & ((x - 0.2) ** 2 + y ** 2 < 0.12)] = 900.0  # bright "CSF"
    clean[body & (np.abs(x + 0.35) < 0.12) & (np.abs(y) < 0.6)] = 200.0  # dark "bone"
    field = np.exp(0.35 * y - 0.25 * x + 0.1 * z)  # smooth, +-40 %
    field /= field[body].mean()
    noise = rng.normal(0, 8.0, clean.shape)
    biased = np.abs(clean * field + noise)
    clean_img = _image(clean, spacing)
    return clean_img, _image(biased, spacing), field.astype(np.float32), body


def _image(array, spacing, direction=None):
    img = sitk.GetImageFromArray(np.asarray(array, dtype=np.float32))
    img.SetSpacing(spacing)
    img.SetOrigin((10.0, -20.0, 5.0))
    if direction is not None:
        img.SetDirection(direction)
    return img


def within_tissue_cv(array, clean, body):
    """Mean coefficient of variation inside each tissue class of the body: what a bias field inflates."""
    cvs = []
    for value in (200.0, 400.0, 900.0):
        inside = body & (clean == value)
        cvs.append(array[inside].std() / array[inside].mean())
    return float(np.mean(cvs))


@pytest.fixture(scope="module")
def volume():
    return tissue_volume()


def test_n4_removes_known_bias(volume):
    clean, biased, field, body = volume
    clean_a = sitk.GetArrayFromImage(clean)
    before = within_tissue_cv(sitk.GetArrayFromImage(biased), clean_a, body)
    corrected, est = n4_correct(biased, return_bias_field=True)
    after = within_tissue_cv(sitk.GetArrayFromImage(corrected), clean_a, body)
    assert after < 0.5 * before, (before, after)
    est_a = sitk.GetArrayFromImage(est)
    est_a = est_a / est_a[body].mean()
    # the recovered field is much closer to the truth than "no field"
    assert relative_l2(est_a, field, body) < 0.4 * relative_l2(np.ones_like(field), field, body)


def test_n4_output_geometry_and_type():
    _, biased, _, _ = tissue_volume(size=(48, 40, 5), spacing=(0.7, 0.8, 4.0))
    biased.SetDirection((0, 0, 1, 1, 0, 0, 0, 1, 0))
    out = n4_correct(biased, iterations=[10, 10])
    assert out.GetPixelID() == sitk.sitkFloat32
    assert out.GetSize() == biased.GetSize()
    assert out.GetSpacing() == biased.GetSpacing()
    assert out.GetOrigin() == biased.GetOrigin()
    assert out.GetDirection() == biased.GetDirection()


def test_n4_leaves_input_untouched(volume):
    _, biased, _, _ = volume
    before = sitk.GetArrayFromImage(biased).copy()
    n4_correct(biased, iterations=[10])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(biased), before)


def test_fast_n4_close_to_full_resolution():
    """The shrunk fit matches full-resolution N4 within the 2 % bound (small volume, fewer iterations)."""
    _, biased, _, body = tissue_volume(size=(64, 64, 6), spacing=(2.6, 2.6, 4.4))
    full = sitk.GetArrayFromImage(n4_correct(biased, shrink=1, iterations=[20, 20, 20]))
    fast = sitk.GetArrayFromImage(n4_correct(biased, shrink=4, iterations=[20, 20, 20]))
    assert relative_l2(fast, full, body) < 0.02


def test_field_keeps_mean_intensity(volume):
    """The log field has zero mean over the mask, so correction does not rescale the image."""
    _, biased, _, _ = volume
    log, mask = estimate_log_bias_field(biased, iterations=[10, 10])
    assert log.shape == mask.shape == sitk.GetArrayViewFromImage(biased).shape
    assert abs(float(log[mask].mean())) < 1e-4


def test_shrink_factors():
    """Per array axis, from the array's size: ``shrink`` everywhere, but no axis below 3 voxels."""
    assert shrink_factors((12, 880, 880), 4) == (4, 4, 4)
    assert shrink_factors((5, 40, 48), 4) == (1, 4, 4)
    assert shrink_factors((12, 880, 880), 1) == (1, 1, 1)
    assert shrink_factors((40, 48), 8) == (8, 8)
    with pytest.raises(InputError):
        shrink_factors((12, 12, 12), 0)


def test_shrink_and_expand_in_index_space():
    """Samples at offset f // 2 of each block (partial blocks padded), expansion back to the exact shape."""
    array = np.arange(5 * 7, dtype=np.float32).reshape(5, 7)
    small = shrink_array(array, (2, 3))
    np.testing.assert_array_equal(small, array[[1, 3, 4]][:, [1, 4, 6]])  # last blocks partial: edge voxel
    np.testing.assert_array_equal(expand_nearest(small, (2, 3), array.shape)[::2, ::3], small)
    # a linear field is reproduced exactly between the samples, and held at the edges
    ramp = np.add.outer(np.arange(9.0) * 2, np.arange(13.0)).astype(np.float32)
    expanded = expand_linear(shrink_array(ramp, (4, 4)), (4, 4), ramp.shape)
    assert expanded.shape == ramp.shape
    np.testing.assert_allclose(expanded[2:7, 2:11], ramp[2:7, 2:11], rtol=0, atol=1e-5)
    np.testing.assert_allclose(expanded[0, 0], ramp[2, 2])
    thin = np.zeros((8, 8), bool)
    thin[3, :] = True  # missed by every sample of a factor-4 shrink
    assert not shrink_array(thin, (4, 4)).any()
    assert block_any(thin, (4, 4)).tolist() == [[True, True], [False, False]]


def test_foreground_mask_finds_the_body(volume):
    _, biased, _, body = volume
    mask = foreground_mask(biased)
    assert mask.GetPixelID() == sitk.sitkUInt8 and mask.GetSize() == biased.GetSize()
    m = sitk.GetArrayFromImage(mask).astype(bool)
    dice = 2 * (m & body).sum() / (m.sum() + body.sum())
    assert dice > 0.9, dice


def test_explicit_mask_and_no_mask(volume):
    _, biased, _, body = volume
    mask = _image(body.astype(np.uint8), biased.GetSpacing())
    mask = sitk.Cast(mask, sitk.sitkUInt8)
    _, inside = estimate_log_bias_field(biased, mask=mask, iterations=[10])
    np.testing.assert_array_equal(inside, body)
    _, everywhere = estimate_log_bias_field(biased, use_mask=False, iterations=[10])
    assert everywhere.all()
    empty = sitk.Cast(mask * 0, sitk.sitkUInt8)
    with pytest.raises(InputError, match="mask is empty"):
        n4_correct(biased, mask=empty)
    wrong = sitk.Image(8, 8, 2, sitk.sitkUInt8)
    with pytest.raises(InputError, match="mask size"):
        n4_correct(biased, mask=wrong)


@pytest.mark.parametrize("size", [(20, 17, 5), (24, 20, 1), (17, 20, 3)])
def test_n4_small_and_single_slice_volumes(size):
    rng = np.random.default_rng(1)
    img = _image(rng.random(size[::-1]) * 100 + 50, (0.5, 0.5, 4.0))
    out = n4_correct(img, iterations=[5])
    assert out.GetSize() == img.GetSize()
    assert np.isfinite(sitk.GetArrayViewFromImage(out)).all()


def test_n4_rejects_non_positive_image():
    img = _image(-np.ones((4, 16, 16)) * np.arange(16), (1.0, 1.0, 4.0))
    with pytest.raises(InputError, match="positive"):
        n4_correct(img)


def test_n4_bad_settings(volume):
    _, biased, _, _ = volume
    with pytest.raises(InputError):
        n4_correct(biased, iterations=[])
    with pytest.raises(InputError):
        n4_correct(biased, iterations=[0, 5])
    with pytest.raises(InputError):
        n4_correct(biased, convergence=-1.0)


def test_n4_progress_and_cancel(volume):
    from spineseg.errors import Cancelled

    _, biased, _, _ = volume
    seen = []
    n4_correct(biased, iterations=[5, 5], progress=lambda f, m: seen.append(f))
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)
    with pytest.raises(Cancelled):
        n4_correct(biased, iterations=[5], cancel=lambda: True)
    answers = iter([False, True])  # cancelled while fitting: raised as soon as the fit returns
    with pytest.raises(Cancelled):
        n4_correct(biased, iterations=[5], cancel=lambda: next(answers))


def test_normalize_statistics_and_clipping():
    rng = np.random.default_rng(0)
    array = rng.normal(100.0, 10.0, (6, 40, 40)).astype(np.float32)
    mask = np.zeros(array.shape, bool)
    mask[:, 5:35, 5:35] = True
    array[~mask] = 0.0
    array[0, 0, :5] = 1e6  # outliers outside the foreground
    out = normalize_intensity(array, mask)
    assert out.dtype == np.float32 and out.shape == array.shape
    assert abs(out[mask].mean()) < 1e-4
    assert abs(out[mask].std() - 1.0) < 1e-3
    # clipping: the outliers (outside the mask) are clipped to the upper foreground percentile
    assert out.max() <= out[mask].max() + 1e-5
    assert out[0, 0, 0] == pytest.approx(out[mask].max())
    # no mask: statistics over everything
    whole = normalize_intensity(array, lower=0.0, upper=100.0)
    assert abs(whole.mean()) < 1e-4 and abs(whole.std() - 1.0) < 1e-3
    # lower clip
    clipped = normalize_intensity(array, mask, lower=10, upper=90)
    lo = np.percentile(array[mask], 10)
    hi = np.percentile(array[mask], 90)
    ref = np.clip(array, lo, hi)
    np.testing.assert_allclose(clipped, (ref - ref[mask].mean()) / ref[mask].std(), rtol=1e-4, atol=1e-4)


def test_normalize_constant_and_bad_percentiles():
    out = normalize_intensity(np.full((2, 3, 4), 7.0))
    assert np.all(out == 0.0)
    with pytest.raises(InputError):
        normalize_intensity(np.ones((2, 2, 2)), lower=60, upper=40)


def test_config_round_trip_and_validation():
    import json

    config = PreprocessingConfig(n4=False, n4_shrink=8, n4_iterations=[20, 20], n4_convergence=0.01,
                                 normalization="zscore", clip_lower=1.0, clip_upper=99.0)
    data = json.loads(json.dumps(config.to_dict()))
    assert PreprocessingConfig.from_dict(data) == config
    assert PreprocessingConfig.from_dict(PreprocessingConfig().to_dict()) == PreprocessingConfig()
    with pytest.raises(InputError, match="unknown"):
        PreprocessingConfig.from_dict({**data, "gamma": 2})
    with pytest.raises(InputError):
        PreprocessingConfig(normalization="minmax")
    with pytest.raises(InputError):
        PreprocessingConfig(n4_shrink=0)


def test_config_apply_canonical_and_normalised(volume):
    from spineseg.geometry import CanonicalFrame

    _, biased, _, body = volume
    img = sitk.PermuteAxes(biased, [2, 0, 1])  # slices along x now
    frame = CanonicalFrame.of(img)
    out = PreprocessingConfig(n4_iterations=[10, 10]).apply(img)
    assert out.dtype == np.float32 and out.shape == frame.shape and out.flags.c_contiguous
    plain = PreprocessingConfig(n4=False).apply(img)
    fg = frame.to_canonical(sitk.GetArrayFromImage(foreground_mask(img)).astype(bool))
    assert abs(plain[fg].mean()) < 1e-3 and abs(plain[fg].std() - 1.0) < 0.05
    raw = PreprocessingConfig(n4=False, normalization="none").apply(img)
    np.testing.assert_array_equal(raw, frame.to_canonical(sitk.GetArrayFromImage(img)))


def test_model_header_names_the_foreground_mask_and_unknown_ones_are_refused():
    """A model trained with another mask algorithm would see differently normalised input: refuse it."""
    from spineseg.errors import InputError
    from spineseg.preprocessing import PreprocessingConfig

    d = PreprocessingConfig().to_dict()
    assert d["foreground_mask"] == "otsu"
    legacy = {k: v for k, v in d.items() if k != "foreground_mask"}  # headers written before the field
    assert PreprocessingConfig.from_dict(legacy).foreground_mask == "otsu"
    with pytest.raises(InputError, match="foreground mask 'body' is not implemented"):
        PreprocessingConfig.from_dict({**d, "foreground_mask": "body"})


def test_config_apply_ignores_storage_order_and_direction_noise(volume):
    """Bit for bit the same network input for a flipped, permuted, 1-ulp-off copy of the same anatomy."""
    _, biased, _, _ = volume
    reference = PreprocessingConfig(n4_iterations=[10, 10]).apply(biased)
    array = sitk.GetArrayFromImage(biased)
    other = sitk.GetImageFromArray(np.ascontiguousarray(np.flip(array, 1)))  # image axis y reversed
    other.SetSpacing(biased.GetSpacing())
    other.SetOrigin(biased.TransformIndexToPhysicalPoint((0, biased.GetSize()[1] - 1, 0)))
    direction = np.asarray(biased.GetDirection()).reshape(3, 3) * [1, -1, 1]
    other.SetDirection(tuple(float(np.nextafter(v, 0.0)) if v else v for v in direction.ravel()))
    other = sitk.PermuteAxes(other, [1, 0, 2])
    np.testing.assert_array_equal(PreprocessingConfig(n4_iterations=[10, 10]).apply(other), reference)
