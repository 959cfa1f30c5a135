"""Scan augmentation: makes thin-slice training windows look like real thick-slice scans from other scanners.

The training data are thin 3D SPACE slices from one data set; the scans the model meets are 2D
turbo spin echo stacks of 3 to 6 mm slices, from other scanners, some with T1-like contrast. So a
share of the windows gets (each drawn independently, parameters below):

- a random slice thickness of :data:`THICK_MM` (k thin slices per thick slice, labelled with the
  centre slice) and a random slice profile: box, triangle or Gaussian weights over the k sub-slices
  (a real slice-selective pulse is not a box);
- in-plane resolution loss (down-sampled and back, per slice), in-plane blur, a smooth
  multiplicative bias field, a contrast change about the mean, and intensity inversion of the
  tissue (background stays dark), so that T1-like contrast is not foreign.

MONAI's transforms do the work where one fits; each is seeded from the window's own NumPy
generator, so a window stays a pure function of (seed, epoch, index). The in-plane transforms see
the (D, H, W) window as D channels of an H x W image, which keeps them off the slice axis.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

#: range of simulated slice spacing (mm) for thick windows
THICK_MM = (3.0, 6.0)
SLICE_PROFILES = ("box", "triangle", "gaussian")
#: probability and parameter range of each scan change (zoom: in-plane scale of the lost resolution)
LOWRES_P, LOWRES_ZOOM = 0.25, (0.5, 1.0)
BLUR_P, BLUR_SIGMA = 0.2, (0.5, 1.0)  # sigma in voxels, in-plane
BIAS_P, BIAS_COEFF = 0.3, (-0.08, 0.08)  # Legendre coefficients of log(bias), degree 3
CONTRAST_P, CONTRAST = 0.15, (0.75, 1.25)  # factor about the window's mean
INVERT_P = 0.1


def draw_thickness(rng: np.random.Generator, slice_mm: float) -> int:
    """k thin slices per simulated thick slice, for a spacing drawn uniformly in :data:`THICK_MM` (k >= 2)."""
    mm = float(rng.uniform(*THICK_MM))
    return max(2, int(round(mm / float(slice_mm))))


def slice_weights(k: int, profile: str) -> np.ndarray:
    """Weights of the k sub-slices of one thick slice (sum 1) for a ``box``, ``triangle`` or ``gaussian`` profile.

    The triangle and the Gaussian (FWHM of k sub-slices, so its tails are cut) weigh the centre
    sub-slice highest, as a real slice profile does; the box is the plain average.
    """
    k = int(k)
    x = np.arange(k, dtype=np.float64) - (k - 1) / 2.0
    if profile == "box":
        w = np.ones(k)
    elif profile == "triangle":
        w = 1.0 - np.abs(x) / (k / 2.0 + 0.5)
    elif profile == "gaussian":
        sigma = k / 2.3548  # FWHM = k sub-slices
        w = np.exp(-0.5 * (x / sigma) ** 2)
    else:
        raise ValueError(f"unknown slice profile {profile!r}; use one of {', '.join(SLICE_PROFILES)}")
    return (w / w.sum()).astype(np.float32)


def draw_profile(rng: np.random.Generator, k: int) -> np.ndarray:
    """Weights of a random profile from :data:`SLICE_PROFILES`."""
    return slice_weights(k, SLICE_PROFILES[int(rng.integers(len(SLICE_PROFILES)))])


def build_transforms(lowres_zoom=LOWRES_ZOOM, blur_sigma=BLUR_SIGMA, bias_coeff=BIAS_COEFF,
                     contrast=CONTRAST) -> Dict[str, object]:
    """The MONAI transforms of :func:`scan_augment` (each applied when drawn), for these parameter ranges."""
    from monai.transforms import (RandBiasField, RandGaussianSmooth, RandScaleIntensityFixedMean,
                                  RandSimulateLowResolution)

    return {
        "lowres": RandSimulateLowResolution(prob=1.0, zoom_range=tuple(lowres_zoom), downsample_mode="nearest",
                                            upsample_mode="bilinear"),
        "blur": RandGaussianSmooth(sigma_x=tuple(blur_sigma), sigma_y=tuple(blur_sigma), prob=1.0),
        "bias": RandBiasField(degree=3, coeff_range=tuple(bias_coeff), prob=1.0),
        "contrast": RandScaleIntensityFixedMean(prob=1.0, factors=(contrast[0] - 1.0, contrast[1] - 1.0)),
    }


#: slices-as-channels (in-plane only) transforms
IN_PLANE = ("lowres", "blur")
_DEFAULT: Dict[str, object] = {}


def apply(name: str, image: np.ndarray, rng: np.random.Generator,
          transforms: Optional[Dict[str, object]] = None) -> np.ndarray:
    """One transform of :func:`build_transforms` (default ranges unless given) on a (D, H, W) window, seeded
    from ``rng``. The bias field acts on intensities above the window's minimum: the data are z-scored,
    and a multiplicative field on negative values would darken what it should brighten."""
    import torch

    if transforms is None:
        if not _DEFAULT:
            _DEFAULT.update(build_transforms())
        transforms = _DEFAULT
    t = transforms[name]
    t.set_random_state(seed=int(rng.integers(0, 2 ** 31 - 1)))  # type: ignore[attr-defined]
    lo = float(image.min()) if name == "bias" else 0.0
    x = torch.from_numpy(np.ascontiguousarray(image - np.float32(lo), dtype=np.float32))
    channels = name in IN_PLANE
    out = t(x if channels else x[None])  # type: ignore[operator]
    out = out if channels else out[0]
    out = out.detach().cpu().numpy() if hasattr(out, "detach") else np.asarray(out)
    return np.asarray(out, dtype=np.float32) + np.float32(lo)


def invert(image: np.ndarray) -> np.ndarray:
    """Tissue intensities mirrored within the window's 1-99th percentiles; the dark background stays dark.

    A soft weight rises from 0 at the 1st percentile to 1 at a fifth of the range, so the
    body outline does not turn into a hard edge.
    """
    lo, hi = (float(v) for v in np.percentile(image, [1.0, 99.0]))
    if hi <= lo:
        return image
    weight = np.clip((image - lo) / (0.2 * (hi - lo)), 0.0, 1.0)
    return (weight * (hi + lo - image) + (1.0 - weight) * image).astype(np.float32)


def scan_augment(image: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, Dict[str, bool]]:
    """The scan changes of this module on one (D, H, W) window; returns the image and which ran."""
    draws = rng.random(5)
    ran = {"lowres": bool(draws[0] < LOWRES_P), "blur": bool(draws[1] < BLUR_P), "bias": bool(draws[2] < BIAS_P),
           "contrast": bool(draws[3] < CONTRAST_P), "invert": bool(draws[4] < INVERT_P)}
    for name in ("lowres", "blur", "bias", "contrast"):
        if ran[name]:
            image = apply(name, image, rng)
    if ran["invert"]:
        image = invert(image)
    return np.ascontiguousarray(image, dtype=np.float32), ran
