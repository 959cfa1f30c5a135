"""N4 bias-field correction and intensity normalisation.

N4 is slow at full resolution (many minutes for an 880x880x12 volume), but the
bias field is smooth, so it is fitted on a shrunk copy and then applied at full
resolution (see :func:`shrink_factors` for why the slice axis is shrunk too).
All of it runs on the canonical (D, H, W) array in index space, so the same
anatomy stored in any voxel order, or with direction cosines a rounding step
off, is preprocessed to the same array bit for bit.
``benchmarks/n4.py`` measures speed and accuracy against full-resolution N4.
"""
from __future__ import annotations

import io
import os
import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from spineseg.errors import Cancelled, InputError
from spineseg.geometry import CanonicalFrame

ProgressCallback = Callable[[float, str], None]
CancelCheck = Callable[[], bool]

#: Defaults chosen with ``benchmarks/n4.py`` (fastest setting within 2% of full-resolution N4).
DEFAULT_SHRINK = 4
DEFAULT_ITERATIONS: Tuple[int, ...] = (50, 50, 50, 50)
DEFAULT_CONVERGENCE = 0.001
NORMALIZATIONS = ("zscore-foreground", "zscore", "none")
#: foreground mask algorithms (see :func:`foreground_mask`), by the name model headers record
FOREGROUND_MASKS = ("otsu",)


def shrink_factors(size: Sequence[int], shrink: int) -> Tuple[int, ...]:
    """Integer shrink factor per array axis of ``size``: ``shrink`` everywhere, no axis below 3 voxels.

    The thick-slice axis is shrunk too: sparing the ~12 slices was measured slower and no more
    accurate on the 880x880x12 phantom (loaded 2-core machine, one run each). N4's B-spline lattice
    needs some support, hence the 3-voxel floor.
    """
    if shrink < 1:
        raise InputError(f"N4 shrink factor must be >= 1, got {shrink}")
    return tuple(max(1, min(int(shrink), int(n) // 3)) for n in size)


def _padded(array: np.ndarray, factors: Sequence[int], mode: str) -> np.ndarray:
    """``array`` padded at the end of each axis to a whole number of blocks (explicitly, not by rounding)."""
    return np.pad(array, [(0, -n % int(f)) for n, f in zip(array.shape, factors)], mode=mode)  # type: ignore[call-overload]


def shrink_array(array: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """One voxel per ``factors``-sized block, blocks anchored at index 0: the voxel at offset ``f // 2``.

    Chosen in index space, so the same canonical array always shrinks to the same voxels.
    ``sitk.Shrink`` instead samples at the block centre in physical space, a half-voxel tie for
    even factors that rounding noise in the direction cosines, or the voxel order, decides. A
    partial last block takes its last voxel (edge padding). Sampling recovered the 880x880x12
    phantom's known field better than block means in a one-off comparison: averaging mixes the
    body's edge with the background, which N4 then reads as bias.
    """
    offsets = [int(f) // 2 for f in factors]
    return _padded(np.asarray(array), factors, "edge")[tuple(slice(o, None, int(f)) for o, f in zip(offsets, factors))]


def block_any(mask: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """True for each block of ``mask`` with any voxel set, so a thin mask never vanishes when shrunk."""
    padded = _padded(np.asarray(mask, dtype=bool), factors, "constant")
    shape = [v for n, f in zip(padded.shape, factors) for v in (n // int(f), int(f))]
    return padded.reshape(shape).any(axis=tuple(range(1, 2 * padded.ndim, 2)))


def expand_nearest(small: np.ndarray, factors: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """Inverse of the block layout: every full-resolution voxel takes the value of its own block."""
    out = small
    for axis, (f, n) in enumerate(zip(factors, shape)):
        out = np.repeat(out, int(f), axis=axis).take(np.arange(int(n)), axis=axis)
    return out


def expand_linear(small: np.ndarray, factors: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """Separable linear interpolation of a :func:`shrink_array` grid back to ``shape``, in index space.

    Sample ``j`` sits at full index ``j * f + f // 2``; voxels beyond the outermost samples take
    the edge value (the field is smooth).
    """
    out = np.asarray(small, dtype=np.float32)
    for axis, (f, n) in enumerate(zip(factors, shape)):
        m = out.shape[axis]
        coord = np.clip((np.arange(int(n), dtype=np.float64) - int(f) // 2) / int(f), 0.0, m - 1)
        i0 = np.floor(coord).astype(np.intp)
        i1 = np.minimum(i0 + 1, m - 1)
        w = (coord - i0).astype(np.float32)
        w = w.reshape([-1 if a == axis else 1 for a in range(out.ndim)])
        out = out.take(i0, axis=axis) * (1 - w) + out.take(i1, axis=axis) * w
    return out.astype(np.float32, copy=False)


def _index_image(array: np.ndarray, spacing: Sequence[float], factors: Optional[Sequence[int]] = None) -> sitk.Image:
    """An image of a (canonical) array on an identity grid: only index space and spacing are visible.

    With ``factors`` it is the grid of :func:`shrink_array`: each sample sits where its voxel
    does on the full grid, so fields evaluated on either grid agree.
    """
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    f = [1] * array.ndim if factors is None else [int(v) for v in factors]
    image.SetSpacing([float(s) * k for s, k in zip(spacing[::-1], f[::-1])])
    image.SetOrigin([float(s) * (k // 2) for s, k in zip(spacing[::-1], f[::-1])])
    return image


def otsu_mask(array: np.ndarray, *, shrink: int = 4) -> np.ndarray:
    """Otsu foreground mask of a (canonical) array, bool of its shape (computed on a shrunk copy).

    Plain Otsu: on the 880x880x12 phantom a body mask (smoothed image above 10 % of its 99th
    percentile) made shrink-4 N4 ~10x slower and recovered the known field worse (15 % vs 9 %
    error), so the simple mask stays. All voxels when Otsu finds nothing.
    """
    array = np.asarray(array, dtype=np.float32)
    factors = shrink_factors(array.shape, shrink)
    small = shrink_array(array, factors) if max(factors) > 1 else array
    inside = sitk.GetArrayFromImage(sitk.OtsuThreshold(sitk.GetImageFromArray(small), 0, 1, 200)).astype(bool)
    if max(factors) > 1:
        inside = expand_nearest(inside, factors, array.shape)
    return inside if inside.any() else np.ones(array.shape, bool)


def foreground_mask(image: sitk.Image, *, shrink: int = 4) -> sitk.Image:
    """:func:`otsu_mask` of an image, computed in its canonical frame; uint8 on ``image``'s grid."""
    frame = CanonicalFrame.of(image, warn=False)
    canonical = frame.to_canonical(sitk.GetArrayViewFromImage(image))
    mask = frame.image_from_canonical(otsu_mask(canonical, shrink=shrink).astype(np.uint8))
    return mask


class _Interrupted(Exception):
    """Raised inside ITK's Python callback to stop a filter when SIGINT/SIGTERM arrives."""


@contextmanager
def interruptible() -> Iterator[None]:
    """Run an ITK filter with a Python progress callback so that Ctrl-C is a cancel, not a crash.

    An exception raised in the callback (KeyboardInterrupt, on Ctrl-C) is printed by SimpleITK as
    a traceback and comes back as a RuntimeError. Here SIGINT/SIGTERM stop the filter through our
    own exception, with its printout swallowed, and then reach the handler that was in place (a
    cancel flag, KeyboardInterrupt); the filter's result is gone, so it ends in Cancelled at least.
    Outside the main thread no signal handler runs, and nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: List[int] = []
    saved_stderr = sys.stderr

    def stop(signum: int, frame: Any) -> None:
        pending.append(signum)
        sys.stderr = io.StringIO()  # SimpleITK prints the callback's exception: not for the user
        raise _Interrupted()

    sigs = [signal.SIGINT, signal.SIGTERM]
    old = {s: signal.signal(s, stop) for s in sigs}
    try:
        yield
    except (RuntimeError, _Interrupted):
        if not pending:
            raise
    finally:
        sys.stderr = saved_stderr
        for s in sigs:
            signal.signal(s, old[s] if old[s] is not None else signal.SIG_DFL)
    if pending:
        for s in pending:
            handler = old[s]
            if callable(handler):
                handler(s, None)  # a cancel flag, or KeyboardInterrupt
            elif handler == signal.SIG_DFL and s == signal.SIGINT:
                raise KeyboardInterrupt
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), s)  # the default action: SIGTERM ends the process
        raise Cancelled("N4 bias-field correction cancelled")


def fit_log_bias_field(
    array: np.ndarray,
    spacing: Sequence[float],
    *,
    shrink: int = DEFAULT_SHRINK,
    iterations: Sequence[int] = DEFAULT_ITERATIONS,
    convergence: float = DEFAULT_CONVERGENCE,
    mask: Optional[np.ndarray] = None,
    use_mask: bool = True,
    upsampling: str = "linear",
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCheck] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Fit N4 on a shrunk canonical (D, H, W) array; return ``(log_field, mask)`` of its shape.

    Everything happens in index space (``spacing``, in mm along the array's axes, only scales N4's
    B-spline lattice), so the result depends on the canonical array alone, never on how the file
    stored it. ``log_field`` is float32 with zero mean over the mask, so correction keeps the overall
    intensity level (N4's own field has an arbitrary offset that depends on the shrink).
    ``upsampling``: ``"linear"`` interpolates the block-grid field (fast, the field is smooth),
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
    array = np.asarray(array, dtype=np.float32)
    if mask is not None:
        mask = np.asarray(mask) != 0
        if mask.shape != array.shape:
            raise InputError(f"N4 mask size {mask.shape[::-1]} differs from the image size {array.shape[::-1]}; "
                             "give a mask on the image's grid")
        if not mask.any():
            raise InputError("N4 mask is empty; give a mask that covers the anatomy or run without one")
    if min(array.shape) == 1:  # N4's B-spline lattice cannot span a single voxel: fit in the remaining dimensions
        keep = [i for i, n in enumerate(array.shape) if n > 1]
        if len(keep) < 2:
            raise InputError(f"image of size {array.shape[::-1]} is too small for N4 bias correction; "
                             "run without N4 (--no-n4)")
        flat_shape = [array.shape[i] for i in keep]
        log, inside = fit_log_bias_field(
            array.reshape(flat_shape), [spacing[i] for i in keep], shrink=shrink, iterations=iterations,
            convergence=convergence, mask=None if mask is None else mask.reshape(flat_shape), use_mask=use_mask,
            upsampling=upsampling, progress=progress, cancel=cancel)
        return log.reshape(array.shape), inside.reshape(array.shape)

    factors = shrink_factors(array.shape, shrink)
    shrunk = max(factors) > 1
    small = np.ascontiguousarray(shrink_array(array, factors)) if shrunk else array
    if mask is not None:
        full_mask = mask
        small_mask = block_any(mask, factors) if shrunk else mask
    elif use_mask:
        small_mask = otsu_mask(small, shrink=1)
        full_mask = None
    else:
        small_mask = np.ones(small.shape, bool)
        full_mask = np.ones(array.shape, bool)
    # the bias model is multiplicative (fitted on log intensities): only positive voxels count
    small_mask = small_mask & (small > 0)
    if not small_mask.any():
        raise InputError("N4 needs positive intensities inside the mask; this image has none there "
                         "(run without N4, --no-n4, or give an MR image)")

    small_image = _index_image(small, spacing, factors)
    small_mask_image = _index_image(small_mask.astype(np.uint8), spacing, factors)
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
    with interruptible():  # Ctrl-C inside the callback would become a RuntimeError
        n4.Execute(small_image, small_mask_image)
    if cancel is not None and cancel():
        raise Cancelled("N4 bias-field correction cancelled")

    report(0.9, "N4 applying field")
    if upsampling == "bspline" and shrunk:
        log_array = sitk.GetArrayFromImage(n4.GetLogBiasFieldAsImage(_index_image(array, spacing)))
    else:
        log_array = sitk.GetArrayFromImage(n4.GetLogBiasFieldAsImage(small_image))
        if shrunk:
            log_array = expand_linear(log_array, factors, array.shape)
    log_array = log_array.astype(np.float32, copy=False)
    if full_mask is None:
        full_mask = expand_nearest(small_mask, factors, array.shape) if shrunk else small_mask
    if full_mask.any():
        log_array -= np.float32(log_array[full_mask].mean(dtype=np.float64))
    report(1.0, "N4 done")
    return log_array, full_mask


def estimate_log_bias_field(image: sitk.Image, *, mask: Optional[sitk.Image] = None,
                            **kwargs: Any) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`fit_log_bias_field` of an image in its canonical frame; ``(log_field, mask)`` as (z, y, x) arrays.

    ``mask``: fit only where it is non-zero (on the image's grid); other keywords as
    :func:`fit_log_bias_field`.
    """
    frame = CanonicalFrame.of(image, warn=False)
    canonical = frame.to_canonical(sitk.GetArrayViewFromImage(image))
    canonical_mask = None
    if mask is not None:
        if mask.GetSize() != image.GetSize():
            raise InputError(f"N4 mask size {mask.GetSize()} differs from the image size {image.GetSize()}; "
                             "give a mask on the image's grid")
        canonical_mask = frame.to_canonical(sitk.GetArrayViewFromImage(mask) != 0)
    log, inside = fit_log_bias_field(canonical, frame.canonical_spacing, mask=canonical_mask, **kwargs)
    return np.ascontiguousarray(frame.from_canonical(log)), np.ascontiguousarray(frame.from_canonical(inside))


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

    The field is fitted on a copy shrunk in index space (:func:`shrink_factors`; ``shrink=1``: full resolution) in
    the canonical frame, with an Otsu foreground mask unless ``mask`` is given or ``use_mask`` is
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

    def apply(self, image: sitk.Image, *, frame: Optional[CanonicalFrame] = None,
              progress: Optional[ProgressCallback] = None, cancel: Optional[CancelCheck] = None) -> np.ndarray:
        """Canonical-frame (D, H, W) float32 array ready for the network; ``frame``: the image's, when the
        caller has it already (computed once per image)."""
        frame = frame or CanonicalFrame.of(image)
        # everything in the canonical frame: the result cannot depend on how the file stores the voxels
        array = np.ascontiguousarray(frame.to_canonical(sitk.GetArrayViewFromImage(image)), dtype=np.float32)
        mask = None
        if self.n4:
            log_field, mask = fit_log_bias_field(
                array, frame.canonical_spacing, shrink=self.n4_shrink, iterations=self.n4_iterations,
                convergence=self.n4_convergence, progress=progress, cancel=cancel)
            array = array / np.exp(log_field)
        if self.normalization == "zscore-foreground":
            if mask is None:
                mask = otsu_mask(array)
            array = normalize_intensity(array, mask, lower=self.clip_lower, upper=self.clip_upper)
        elif self.normalization == "zscore":
            array = normalize_intensity(array, None, lower=self.clip_lower, upper=self.clip_upper)
        return np.ascontiguousarray(array, dtype=np.float32)


def relative_l2(a: np.ndarray, b: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """``||a - b|| / ||b||`` over ``mask`` (all voxels if None): how far ``a`` is from reference ``b``."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if mask is not None:
        a, b = a[mask], b[mask]
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


__all__ = [
    "PreprocessingConfig", "block_any", "estimate_log_bias_field", "expand_linear", "expand_nearest",
    "fit_log_bias_field", "foreground_mask", "n4_correct", "normalize_intensity", "otsu_mask", "relative_l2",
    "shrink_array", "shrink_factors",
]
