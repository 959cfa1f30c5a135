"""Scan augmentation (thick slices with a slice profile, resolution loss, blur, bias, contrast, inversion)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def test_slice_profiles_sum_to_one_and_only_the_box_is_flat():
    from spineseg.training.augment import SLICE_PROFILES, slice_weights

    for k in (2, 3, 5, 7):
        for profile in SLICE_PROFILES:
            w = slice_weights(k, profile)
            assert w.shape == (k,) and w.sum() == pytest.approx(1.0) and np.allclose(w, w[::-1])
        assert np.allclose(slice_weights(k, "box"), 1.0 / k)
        for profile in ("triangle", "gaussian"):
            if k == 2:  # two sub-slices: any symmetric profile is flat
                continue
            w = slice_weights(k, profile)
            assert w.max() > w.min() and w[(k - 1) // 2] == pytest.approx(w.max())
    with pytest.raises(ValueError, match="profile"):
        slice_weights(3, "sinc")


def test_thicken_with_a_profile_is_the_weighted_sum_of_each_group():
    from spineseg.training.augment import slice_weights
    from spineseg.training.sampling import thicken

    img = np.random.default_rng(0).normal(size=(10, 3, 4)).astype(np.float32)
    lab = np.arange(10, dtype=np.uint8)[:, None, None] * np.ones((1, 3, 4), np.uint8)
    w = slice_weights(3, "triangle")
    t, tl = thicken(img, lab, 3, 1, weights=w)
    expect = np.stack([np.tensordot(w, img[1 + 3 * j:4 + 3 * j], axes=1) for j in range(3)])
    np.testing.assert_allclose(t, expect, rtol=1e-6, atol=1e-6)
    assert tl[:, 0, 0].tolist() == [2, 5, 8]
    box, _ = thicken(img, lab, 3, 1, weights=slice_weights(3, "box"))
    np.testing.assert_allclose(box, thicken(img, lab, 3, 1)[0], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="weights"):
        thicken(img, lab, 3, 0, weights=np.ones(4) / 4)


def test_thickness_draws_cover_3_to_6_mm():
    from spineseg.training.augment import draw_thickness

    rng = np.random.default_rng(0)
    ks = {draw_thickness(rng, 0.9) for _ in range(400)}
    assert ks == {3, 4, 5, 6, 7}  # 3.0 / 0.9 -> 3 ... 6.0 / 0.9 -> 7
    assert {draw_thickness(rng, 4.4) for _ in range(50)} == {2}  # already thick: at least two slices


def _window(seed: int = 0) -> np.ndarray:
    """A z-scored-looking window: dark background, a bright block, noise, slices that differ."""
    rng = np.random.default_rng(seed)
    img = np.full((6, 48, 48), -1.5, np.float32)
    img[:, 8:40, 8:40] = 0.5
    img[:, 20:28, 20:28] = 2.5
    img += np.arange(6, dtype=np.float32)[:, None, None] * 0.1
    return img + rng.normal(0, 0.05, img.shape).astype(np.float32)


@pytest.mark.parametrize("name", ["lowres", "blur"])
def test_in_plane_changes_never_mix_slices(name):
    from spineseg.training.augment import apply

    img = _window()
    a = apply(name, img, np.random.default_rng(4))
    assert a.shape == img.shape and a.dtype == np.float32 and not np.allclose(a, img)
    changed = img.copy()
    changed[0] += 5.0  # only slice 0 differs: every other output slice must be the same
    b = apply(name, changed, np.random.default_rng(4))
    np.testing.assert_allclose(a[1:], b[1:], rtol=1e-5, atol=1e-5)
    assert not np.allclose(a[0], b[0])


def test_bias_field_is_smooth_positive_and_multiplicative_above_the_minimum():
    from spineseg.training.augment import build_transforms, apply

    img = _window()
    strong = build_transforms(bias_coeff=(0.08, 0.08))
    out = apply("bias", img, np.random.default_rng(0), strong)
    lo = img.min()
    ratio = (out - lo)[img > 0] / (img - lo)[img > 0]
    assert ratio.min() > 0 and ratio.std() > 0.01  # a varying, positive gain
    assert out.min() == pytest.approx(lo, abs=0.5)  # the background stays at the bottom
    assert np.allclose(apply("bias", img, np.random.default_rng(0), strong), out)  # seeded by the window's rng


def test_inversion_makes_bright_tissue_dark_and_keeps_the_background():
    from spineseg.training.augment import invert

    img = _window()
    out = invert(img)
    assert out[:, 24, 24].mean() < out[:, 12, 12].mean()  # the bright core is now darker than the tissue around
    bg = img < np.percentile(img, 1.0) + 1e-6
    np.testing.assert_allclose(out[bg], img[bg], atol=1e-5)


def test_scan_augment_is_a_function_of_the_generator():
    from spineseg.training.augment import scan_augment

    img = _window()
    seen = set()
    for seed in range(30):
        a, ran = scan_augment(img, np.random.default_rng(seed))
        b, _ = scan_augment(img, np.random.default_rng(seed))
        assert np.array_equal(a, b) and np.isfinite(a).all() and a.shape == img.shape
        seen |= {k for k, v in ran.items() if v}
    assert seen == {"lowres", "blur", "bias", "contrast", "invert"}


def test_default_windows_draw_random_thickness_and_profiles(monkeypatch):
    """Thin 0.9 mm data: with the default preset the thick windows have 3 to 7 sub-slices per slice."""
    from spineseg.training import augment
    from spineseg.training.data import CachedCase
    from spineseg.training.presets import preset_config
    from spineseg.training.sampling import WindowDataset

    class Memory(CachedCase):
        def image(self, mmap=True):
            return np.broadcast_to(np.arange(84, dtype=np.float32)[:, None, None] + 1, (84, 32, 32))

        def label(self, mmap=True):
            return np.ones((84, 32, 32), np.uint8)

        def foreground(self):
            return np.zeros((0, 3), np.int32)

    case = Memory("c", Path("."), (84, 32, 32), (0.9, 1.0, 1.0), [1])
    cfg = preset_config("default", window=[12, 32, 32], thick_prob=1.0, flips=False, intensity_aug=False,
                        foreground_prob=0.0, windows_per_case=150)
    assert cfg.scan_aug
    ds = WindowDataset({"c": case}, cfg.replace(scan_aug=True), [1, 2, 3])
    ds.set_epoch(0)
    plain = WindowDataset({"c": case}, cfg.replace(scan_aug=False), [1, 2, 3])
    plain.set_epoch(0)
    for name in ("LOWRES_P", "BLUR_P", "BIAS_P", "CONTRAST_P", "INVERT_P"):
        monkeypatch.setattr(augment, name, 0.0)  # only the thickness and profile are drawn
    steps = set()
    for i in range(len(ds)):
        # the slice-index ramp survives a symmetric weighted average, so its step is k
        img, _ = ds.window(i)
        col = img[:, 16, 16]
        d = np.diff(col[col != 0])
        assert len(d) and np.allclose(d, d[0], atol=1e-3)
        steps.add(int(round(float(d[0]))))
        assert np.array_equal(img, ds.window(i)[0])
    assert steps == {3, 4, 5, 6, 7}
    fixed = {int(round(float(np.diff(plain.window(i)[0][:, 16, 16])[0]))) for i in range(10)}
    assert fixed == {5}  # scan_aug off: the fixed k of the target spacing, as before


def test_models_record_the_thickest_slices_they_were_trained_on():
    """The inference spacing check accepts what training saw: up to 6.3 mm (7 x 0.9) with scan augmentation."""
    from spineseg.training.data import CachedCase
    from spineseg.training.presets import preset_config
    from spineseg.training.runner import slice_range

    thin = [CachedCase("c", Path("."), (20, 8, 8), (0.9, 1.2, 1.2), [1])]
    cfg = preset_config("default", thick_prob=0.5)
    assert slice_range(thin, cfg) == pytest.approx([0.9, 6.3])
    assert slice_range(thin, cfg.replace(scan_aug=False)) == pytest.approx([0.9, 4.5])
    thick = [CachedCase("c", Path("."), (12, 8, 8), (4.4, 1.2, 1.2), [1])]
    assert slice_range(thick, cfg) is None  # already thick: never thickened
