"""Flip test-time augmentation: one volume predicted under mirror flips, averaged, and where the flips disagree.

The networks are trained with random flips of every axis, so a mirrored volume is as
valid an input as the original; where the predictions of the mirrored copies disagree,
the network is unsure. Flips are of canonical axes: 0 = D (the slice axis, left-right in
a sagittal scan), 1 = H (superior-inferior), 2 = W (anterior-posterior). The passes run
through the backend's own ``predict_volume``, so the torch and ONNX backends augment
identically.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from spineseg.errors import InputError
from spineseg.inference.postprocess import decide

Flip = Tuple[int, ...]
#: (C, D, H, W) volume, progress callback -> (K, D, H, W) probabilities
PassFn = Callable[[np.ndarray, Callable[[float, str], None]], np.ndarray]

#: the flips averaged by default: as stored, and mirrored left-right (along the slice axis)
DEFAULT_FLIPS: Tuple[Flip, ...] = ((), (0,))
#: ``segment --tta-inplane``: the default pair plus one pass mirrored along each in-plane axis
INPLANE_FLIPS: Tuple[Flip, ...] = ((), (0,), (1,), (2,))
#: every combination of flips of the three axes (8 passes)
ALL_FLIPS: Tuple[Flip, ...] = tuple(c for n in range(4) for c in itertools.combinations((0, 1, 2), n))


@dataclass
class FlipAverage:
    """``probabilities``: mean over the passes (K, D, H, W); ``disagreement``: per voxel, the fraction
    of passes whose label differs from the label of the mean (D, H, W; 0 where all agree);
    ``uncertainty``: the share of the segmented voxels where the passes disagree. When the passes
    include the stored volume and its left-right mirror, only that pair counts: the spine is nearly
    symmetric left-right, so their disagreement is the network's doubt, while a volume turned upside
    down or back to front also shows how much the network depends on orientation. The review flag's
    limit is set on that pair, whichever flips are averaged."""

    probabilities: np.ndarray
    disagreement: np.ndarray
    uncertainty: float


def check_flips(flips: Sequence[Sequence[int]]) -> Tuple[Flip, ...]:
    """Normalised flip set (sorted axes, no repeats), or :class:`InputError` naming the problem."""
    out = []
    for f in flips:
        axes = tuple(sorted(int(a) for a in f))
        if any(a not in (0, 1, 2) for a in axes) or len(set(axes)) != len(axes):
            raise InputError(f"TTA flip {tuple(f)}: give canonical axes 0 (slices), 1 and 2, each at most once")
        if axes in out:
            raise InputError(f"TTA flip {tuple(f)} is listed twice; give each flip once")
        out.append(axes)
    if len(out) < 2:
        raise InputError("TTA needs at least two flips to average, e.g. () and (0,)")
    return tuple(out)


def average_flips(predict: PassFn, volume: np.ndarray, flips: Sequence[Flip], task: str,
                  progress: Optional[Callable[[float, str], None]] = None) -> FlipAverage:
    """Run ``predict`` on each flipped copy of a (C, D, H, W) volume, flip back, average, compare.

    Only the running sum of probabilities and one uint8 label map per pass are kept.
    """
    report = progress or (lambda f, m: None)
    total: Optional[np.ndarray] = None
    labels = []
    n = len(flips)
    for i, axes in enumerate(flips):
        x = np.ascontiguousarray(np.flip(volume, tuple(a + 1 for a in axes))) if axes else volume
        probs = predict(x, lambda f, m="", _i=i: report((_i + float(f)) / n, m or f"inference (flip {_i + 1}/{n})"))
        if axes:
            probs = np.flip(probs, tuple(a + 1 for a in axes))
        labels.append(decide(probs, task))
        total = np.array(probs, dtype=np.float32) if total is None else total + probs
    assert total is not None
    mean = total / np.float32(n)
    consensus = decide(mean, task)
    differ = np.zeros(consensus.shape, dtype=np.float32)
    segmented = consensus > 0
    for lab in labels:
        differ += lab != consensus
        segmented |= lab > 0
    differ /= np.float32(n)
    if all(f in flips for f in DEFAULT_FLIPS):
        # two passes agree exactly where their labels do (the mean of two maps keeps a label both give)
        a, b = (labels[list(flips).index(f)] for f in DEFAULT_FLIPS)
        pair_segmented = (a > 0) | (b > 0)
        n_segmented = int(pair_segmented.sum())
        uncertainty = float(((a != b) & pair_segmented).sum() / n_segmented) if n_segmented else 0.0
    else:
        n_segmented = int(segmented.sum())
        uncertainty = float(((differ > 0) & segmented).sum() / n_segmented) if n_segmented else 0.0
    return FlipAverage(probabilities=mean, disagreement=differ, uncertainty=uncertainty)
