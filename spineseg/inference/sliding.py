"""Sliding-window inference in NumPy: window plan, Gaussian blending, batching, progress and cancel.

This is the stitcher of the ONNX Runtime backend, which must run without PyTorch
(so MONAI, which imports torch, is out). It follows MONAI's
``sliding_window_inference`` (Gaussian mode) step for step: the same scan
interval, the same window positions, the same separable Gaussian and the same
symmetric zero padding of volumes smaller than the window, so the torch and ONNX
backends blend identically.
"""
from __future__ import annotations

import math
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from spineseg.errors import Cancelled

Window = Tuple[int, int, int]
#: window overlap of ``spineseg segment`` and of training's validation (which scores as segment runs)
DEFAULT_OVERLAP = 0.5
#: (batch, C, D, H, W) float32 in -> (batch, K, D, H, W) float32 out (probabilities)
BatchPredictor = Callable[[np.ndarray], np.ndarray]


def scan_interval(size: Sequence[int], window: Sequence[int], overlap: float) -> Tuple[int, ...]:
    """Step between window starts per axis (MONAI's rule: a window as large as the axis takes one step)."""
    out = []
    for s, w in zip(size, window):
        out.append(int(w) if int(w) == int(s) else max(1, int(w * (1.0 - overlap))))
    return tuple(out)


def window_starts(size: int, window: int, interval: int) -> List[int]:
    """Start indices along one axis; the last window is flush with the end."""
    if size <= window:
        return [0]
    n = int(math.ceil((size - window) / float(interval))) + 1
    return sorted({min(i * interval, size - window) for i in range(n)})


def window_grid(size: Sequence[int], window: Sequence[int], overlap: float) -> List[Tuple[slice, slice, slice]]:
    """All window positions (D, H, W slices) over a volume of ``size`` (already at least ``window``)."""
    steps = scan_interval(size, window, overlap)
    axes = [window_starts(int(s), int(w), int(i)) for s, w, i in zip(size, window, steps)]
    return [
        (slice(d, d + window[0]), slice(h, h + window[1]), slice(w, w + window[2]))
        for d in axes[0] for h in axes[1] for w in axes[2]
    ]


def gaussian_weights(window: Sequence[int], sigma_scale: float = 0.125) -> np.ndarray:
    """Separable Gaussian importance map over a window, peak 1, clamped away from 0 (as MONAI)."""
    weights = np.ones((), dtype=np.float32)
    for n in window:
        x = np.arange(n, dtype=np.float32) - (n - 1) / 2.0
        sigma = n * sigma_scale
        g = np.exp(x ** 2 / (-2.0 * sigma ** 2)).astype(np.float32)
        weights = np.multiply.outer(weights, g)
    return np.clip(weights, max(float(weights.min()), 1e-3), None).astype(np.float32)


def pad_to_window(volume: np.ndarray, window: Sequence[int]) -> Tuple[np.ndarray, Tuple[slice, ...]]:
    """Zero-pad the last three axes symmetrically up to ``window``; returns the crop that undoes it."""
    pads = []
    crop = []
    for s, w in zip(volume.shape[-3:], window):
        diff = max(int(w) - int(s), 0)
        lo = diff // 2
        pads.append((lo, diff - lo))
        crop.append(slice(lo, lo + int(s)))
    if not any(p for pair in pads for p in pair):
        return volume, tuple(crop)
    lead = [(0, 0)] * (volume.ndim - 3)
    return np.pad(volume, lead + pads, mode="constant"), tuple(crop)


def batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def sliding_window(
    volume: np.ndarray,
    predict: BatchPredictor,
    *,
    window: Sequence[int],
    overlap: float = 0.5,
    batch_size: int = 4,
    progress: Optional[Callable[[float, str], None]] = None,
    cancel: Optional[Callable[[], bool]] = None,
) -> np.ndarray:
    """Gaussian-blended sliding-window prediction of a (C, D, H, W) volume -> (K, D, H, W) float32.

    ``cancel`` is checked before every batch (raises :class:`Cancelled`);
    ``progress`` gets the fraction of windows done.
    """
    if volume.ndim != 4:
        raise ValueError(f"expected a (C, D, H, W) volume, got shape {volume.shape}")
    window = tuple(int(w) for w in window)
    padded, crop = pad_to_window(volume.astype(np.float32, copy=False), window)
    grid = window_grid(padded.shape[1:], window, overlap)
    weights = gaussian_weights(window)
    out: Optional[np.ndarray] = None
    norm = np.zeros(padded.shape[1:], dtype=np.float32)
    done = 0
    for group in batches(grid, max(1, int(batch_size))):
        if cancel is not None and cancel():
            raise Cancelled("inference cancelled")
        x = np.stack([padded[(slice(None),) + s] for s in group])
        y = np.asarray(predict(x), dtype=np.float32)
        if out is None:
            out = np.zeros((y.shape[1],) + padded.shape[1:], dtype=np.float32)
        for s, pred in zip(group, y):
            out[(slice(None),) + s] += pred * weights
            norm[s] += weights
        done += len(group)
        if progress is not None:
            progress(done / len(grid), "inference")
    assert out is not None
    out /= norm
    return out[(slice(None),) + crop]
