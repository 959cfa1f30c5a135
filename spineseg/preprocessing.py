"""N4 bias-field correction and intensity normalisation.

N4 is slow at full resolution (many minutes for an 880x880x12 volume), but the
bias field is smooth, so it is fitted on a shrunk copy and then applied at full
resolution (see :func:`shrink_factors` for why the slice axis is shrunk too).
``benchmarks/n4.py`` measures speed and accuracy against full-resolution N4.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from spineseg.errors import Cancelled, InputError

ProgressCallback = Callable[[float, str], None]
CancelCheck = Callable[[], bool]

#: Defaults chosen with ``benchmarks/n4.py`` (fastest setting within 2% of full-resolution N4).
DEFAULT_SHRINK = 4
DEFAULT_ITERATIONS: Tuple[int, ...] = (50, 50, 50, 50)
DEFAULT_CONVERGENCE = 0.001
NORMALIZATIONS = ("zscore-foreground", "zscore", "none")
#: foreground mask algorithms (see :func:`foreground_mask`), by the name model headers record
FOREGROUND_MASKS = ("otsu",)


def shrink_factors(spacing: Sequence[float], shrink: int) -> Tuple[int, int, int]:
    """Per-axis shrink factors (x, y, z): ``shrink`` along every axis, thick-slice axis included.

    Shrinking in-plane only (sparing the ~12 thick slices) was measured slower and no more accurate
    on the 880x880x12 phantom (loaded 2-core machine, one run each), so every axis is shrunk.
    """
    if shrink < 1:
        raise InputError(f"N4 shrink factor must be >= 1, got {shrink}")
    return (int(shrink),) * 3  # type: ignore[return-value]


def foreground_mask(image: sitk.Image, *, shrink: int = 4) -> sitk.Image:
    """Otsu foreground mask, uint8 with 1 inside, on ``image``'s grid (computed on a shrunk copy).

    Plain Otsu: on the 880x880x12 phantom a body mask (smoothed image above 10 % of its 99th
    percentile) made shrink-4 N4 ~10x slower and recovered the known field worse (15 % vs 9 %
    error), so the simple mask stays. All voxels when Otsu finds nothing.
    """
    image = sitk.Cast(image, sitk.sitkFloat32)
    factors = _fit_factors(shrink_factors(image.GetSpacing(), shrink), image.GetSize())
    small = sitk.Shrink(image, list(factors)) if max(factors) > 1 else image
    mask = sitk.OtsuThreshold(small, 0, 1, 200)
    if small is not image:
        mask = sitk.Resample(mask, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8, True)
    if not sitk.GetArrayViewFromImage(mask).any():
        mask = sitk.Cast(image * 0 + 1, sitk.sitkUInt8)
    return sitk.Cast(mask, sitk.sitkUInt8)


def _fit_factors(factors: Sequence[int], size: Sequence[int]) -> Tuple[int, int, int]:
    """Shrink no axis below 3 voxels (N4's B-spline lattice needs some support)."""
    return tuple(max(1, min(int(f), int(n) // 3)) for f, n in zip(factors, size))  # type: ignore[return-value]


def _check_mask(mask: sitk.Image, image: sitk.Image) -> sitk.Image:
    if mask.GetSize() != image.GetSize():
        raise InputError(f"N4 mask size {mask.GetSize()} differs from the image size {image.GetSize()}; "
                         "give a mask on the image's grid")
    m = sitk.Cast(sitk.NotEqual(mask, 0), sitk.sitkUInt8)
    m.CopyInformation(image)
    if not sitk.GetArrayViewFromImage(m).any():
        raise InputError("N4 mask is empty; give a mask that covers the anatomy or run without one")
    return m


def estimate_log_bias_field(
    image: sitk.Image,
    *,
    shrink: int = DEFAULT_SHRINK,
    iterations: Sequence[int] = DEFAULT_ITERATIONS,
    convergence: float = DEFAULT_CONVERGENCE,
    mask: Optional[sitk.Image] = None,
    use_mask: bool = True,
    upsampling: str = "linear",
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCheck] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Fit N4 on a shrunk copy; return ``(log_field, mask)`` as full-resolution (z, y, x) arrays.

    ``log_field`` is float32 with zero mean over the mask, so correction keeps the overall
    intensity level (N4's own field has an arbitrary offset that depends on the shrink).
    ``upsampling``: ``"linear"`` resamples the low-resolution field (fast, the field is smooth),
    ``"bspline"`` evaluates N4's B-spline at every full-resolution voxel (slow, exact).
    """
    iterations = [int(i) for i in iterations]
    if not iterations or min(iterations) < 1:
        raise InputError(f"N4 iterations must be one or more positive numbers (one per fitting level), got {iterations}")
    if not convergence >= 0:
        raise InputError(f"N4 convergence threshold must be >= 0, got {convergence}")
    if upsampling not in ("linear", "bspline"):
        raise ValueError(f"unknown upsampling {upsampling!r}")
    report = progress or (lambda f, m: None)
    image = sitk.Cast(image, sitk.sitkFloat32)
    size = image.GetSize()
    if min(size) == 1:  # N4's B-spline lattice cannot span a single voxel: fit in the remaining dimensions
        keep = [i for i, n in enumerate(size) if n > 1]
        if len(keep) < 2:
            raise InputError(f"image of size {size} is too small for N4 bias correction; run without N4 (--no-n4)")
        array = sitk.GetArrayFromImage(image)
        flat = sitk.GetImageFromArray(array.reshape([size[i] for i in reversed(keep)]))
        flat.SetSpacing([image.GetSpacing()[i] for i in keep])
        flat_mask = None
        if mask is not None:
            checked = sitk.GetArrayFromImage(_check_mask(mask, image))
            flat_mask = sitk.GetImageFromArray(checked.reshape(flat.GetSize()[::-1]))
            flat_mask.CopyInformation(flat)
        log, inside = estimate_log_bias_field(
            flat, shrink=shrink, iterations=iterations, convergence=convergence, mask=flat_mask, use_mask=use_mask,
            upsampling=upsampling, progress=progress, cancel=cancel)
        return log.reshape(array.shape), inside.reshape(array.shape)
    factors = shrink_factors(image.GetSpacing(), shrink)
    factors = _fit_factors(factors, image.GetSize())
    small = sitk.Shrink(image, list(factors)) if max(factors) > 1 else image
    if mask is not None:
        full_mask = _check_mask(mask, image)
        small_mask = sitk.Shrink(full_mask, list(factors)) if max(factors) > 1 else full_mask
        # nearest-neighbour shrink of a mask can miss a thin mask entirely
        if not sitk.GetArrayViewFromImage(small_mask).any():
            small_mask = sitk.Cast(sitk.BinaryDilate(full_mask, [f for f in factors]), sitk.sitkUInt8)
            small_mask = sitk.Shrink(small_mask, list(factors))
    elif use_mask:
        small_mask = foreground_mask(small, shrink=1)
        full_mask = None
    else:
        small_mask = sitk.Cast(small * 0 + 1, sitk.sitkUInt8)
        full_mask = None
    # the bias model is multiplicative (fitted on log intensities): only positive voxels count
    small_mask = sitk.And(small_mask, sitk.Cast(sitk.Greater(small, 0.0), sitk.sitkUInt8))
    if not sitk.GetArrayViewFromImage(small_mask).any():
        raise InputError("N4 needs positive intensities inside the mask; this image has none there "
                         "(run without N4, --no-n4, or give an MR image)")

    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations(iterations)
    n4.SetConvergenceThreshold(float(convergence))
    total = float(sum(iterations))

    def on_iteration() -> None:
        level = n4.GetCurrentLevel()
        done = sum(iterations[:level]) + n4.GetElapsedIterations()
        report(0.9 * min(1.0, done / total), f"N4 level {level + 1}/{len(iterations)}")

    n4.AddCommand(sitk.sitkIterationEvent, on_iteration)
    # ITK's N4 ignores Abort() inside its iterations, so cancel is checked around the fit (about a second)
    if cancel is not None and cancel():
        raise Cancelled("N4 bias-field correction cancelled")
    report(0.0, "N4 fitting")
    n4.Execute(small, small_mask)
    if cancel is not None and cancel():
        raise Cancelled("N4 bias-field correction cancelled")

    report(0.9, "N4 applying field")
    if upsampling == "bspline" or small is image:
        log_field = n4.GetLogBiasFieldAsImage(image)
    else:
        small_field = n4.GetLogBiasFieldAsImage(small)
        # the shrunk grid covers a slightly smaller box than the full one: extrapolate at the edges
        log_field = sitk.Resample(small_field, image, sitk.Transform(), sitk.sitkLinear, 0.0,
                                  sitk.sitkFloat32, True)
    log_array = sitk.GetArrayFromImage(log_field).astype(np.float32, copy=False)
    if full_mask is None:
        if use_mask:
            full_mask = sitk.Resample(small_mask, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                                      sitk.sitkUInt8, True)
        else:
            full_mask = sitk.Cast(image * 0 + 1, sitk.sitkUInt8)
    mask_array = sitk.GetArrayFromImage(full_mask).astype(bool)
    if mask_array.any():
        log_array -= np.float32(log_array[mask_array].mean())
    report(1.0, "N4 done")
    return log_array, mask_array


def n4_correct(
    image: sitk.Image,
    *,
    shrink: int = DEFAULT_SHRINK,
    iterations: Sequence[int] = DEFAULT_ITERATIONS,
    convergence: float = DEFAULT_CONVERGENCE,
    mask: Optional[sitk.Image] = None,
    use_mask: bool = True,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCheck] = None,
    return_bias_field: bool = False,
    upsampling: str = "linear",
):
    """N4 bias-field correction: float32 image with the input's geometry.

    The field is fitted on a copy shrunk by :func:`shrink_factors` (``shrink=1``: full
    resolution), with an Otsu foreground mask unless ``mask`` is given or ``use_mask`` is
    False, and applied at full resolution. With ``return_bias_field`` returns
    ``(corrected, bias_field)``, the multiplicative field (corrected = image / field).
    """
    log_array, _ = estimate_log_bias_field(
        image, shrink=shrink, iterations=iterations, convergence=convergence, mask=mask, use_mask=use_mask,
        upsampling=upsampling, progress=progress, cancel=cancel)
    array = sitk.GetArrayViewFromImage(image).astype(np.float32)
    bias = np.exp(log_array)
    corrected = sitk.GetImageFromArray(array / bias)
    corrected.CopyInformation(image)
    if not return_bias_field:
        return corrected
    field_image = sitk.GetImageFromArray(bias)
    field_image.CopyInformation(image)
    return corrected, field_image


def normalize_intensity(
    array: np.ndarray,
    mask: Optional[np.ndarray] = None,
    *,
    lower: float = 0.5,
    upper: float = 99.5,
) -> np.ndarray:
    """Clip to the ``lower``/``upper`` percentiles and z-score, statistics over ``mask`` (all voxels if None).

    Percentile clipping removes the few very bright voxels (fat, vessels, artefacts) that would
    otherwise dominate the standard deviation. Returns float32 of the same shape.
    """
    if not 0.0 <= lower < upper <= 100.0:
        raise InputError(f"normalisation percentiles must satisfy 0 <= lower < upper <= 100, got {lower}, {upper}")
    values = np.asarray(array, dtype=np.float32)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != values.shape:
            raise ValueError(f"mask shape {mask.shape} differs from array shape {values.shape}")
        if not mask.any():
            mask = None
    sample = values[mask] if mask is not None else values.ravel()
    lo, hi = np.percentile(sample, [lower, upper])
    clipped = np.clip(values, lo, hi)
    stats = clipped[mask] if mask is not None else clipped
    mean = float(stats.mean(dtype=np.float64))
    std = float(stats.std(dtype=np.float64))
    if std <= 1e-12 * max(1.0, abs(mean)):
        std = 1.0
    return ((clipped - np.float32(mean)) / np.float32(std)).astype(np.float32, copy=False)


@dataclass
class PreprocessingConfig:
    """What a model expects done to an image before the network; stored in the model header.

    ``normalization``: ``"zscore-foreground"`` (statistics over the Otsu foreground),
    ``"zscore"`` (over all voxels) or ``"none"``; ``clip_lower``/``clip_upper`` are percentiles.
    """

    n4: bool = True
    n4_shrink: int = DEFAULT_SHRINK
    n4_iterations: List[int] = field(default_factory=lambda: list(DEFAULT_ITERATIONS))
    n4_convergence: float = DEFAULT_CONVERGENCE
    normalization: str = "zscore-foreground"
    clip_lower: float = 0.5
    clip_upper: float = 99.5
    #: how the foreground of "zscore-foreground" is found. Named in the model header because a
    #: model only works on input normalised as in training: a changed mask algorithm must get a
    #: new name, so models trained with the old one are refused instead of silently degraded.
    foreground_mask: str = "otsu"

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATIONS:
            raise InputError(f"unknown normalisation {self.normalization!r}; use one of {', '.join(NORMALIZATIONS)}")
        if self.foreground_mask not in FOREGROUND_MASKS:
            raise InputError(f"foreground mask {self.foreground_mask!r} is not implemented by this SpineSeg "
                             f"(it has {', '.join(FOREGROUND_MASKS)}); update SpineSeg or retrain the model")
        self.n4_iterations = [int(i) for i in self.n4_iterations]
        if int(self.n4_shrink) < 1 or not self.n4_iterations or min(self.n4_iterations) < 1:
            raise InputError(f"bad N4 settings: shrink {self.n4_shrink}, iterations {self.n4_iterations}")
        if not 0.0 <= float(self.clip_lower) < float(self.clip_upper) <= 100.0:
            raise InputError(f"bad clipping percentiles {self.clip_lower}, {self.clip_upper}")

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-ready dict (the model header's ``preprocessing``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "PreprocessingConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error (a newer model file needs a newer SpineSeg)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"model preprocessing has unknown settings {', '.join(unknown)}; update SpineSeg")
        return cls(**data)

    def apply(self, image: sitk.Image, *, progress: Optional[ProgressCallback] = None,
              cancel: Optional[CancelCheck] = None) -> np.ndarray:
        """Canonical-frame (D, H, W) float32 array ready for the network."""
        from spineseg.geometry import CanonicalFrame

        frame = CanonicalFrame.of(image)
        mask = None
        if self.n4:
            log_field, mask = estimate_log_bias_field(
                image, shrink=self.n4_shrink, iterations=self.n4_iterations, convergence=self.n4_convergence,
                progress=progress, cancel=cancel)
            array = sitk.GetArrayViewFromImage(image).astype(np.float32) / np.exp(log_field)
        else:
            array = sitk.GetArrayViewFromImage(image).astype(np.float32)
        if self.normalization == "zscore-foreground":
            if mask is None:
                mask = sitk.GetArrayFromImage(foreground_mask(image)).astype(bool)  # a view of a temporary would dangle
            array = normalize_intensity(array, mask, lower=self.clip_lower, upper=self.clip_upper)
        elif self.normalization == "zscore":
            array = normalize_intensity(array, None, lower=self.clip_lower, upper=self.clip_upper)
        return np.ascontiguousarray(frame.to_canonical(array), dtype=np.float32)


def relative_l2(a: np.ndarray, b: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """``||a - b|| / ||b||`` over ``mask`` (all voxels if None): how far ``a`` is from reference ``b``."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if mask is not None:
        a, b = a[mask], b[mask]
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


__all__ = [
    "PreprocessingConfig", "estimate_log_bias_field", "foreground_mask", "n4_correct", "normalize_intensity",
    "relative_l2", "shrink_factors",
]
