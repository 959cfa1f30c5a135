"""The phantom's true per-level dimensions, from its continuous anatomy (not from its voxels).

Each measurement of :mod:`spineseg.levels.measure` is taken here on the anatomy the
phantom paints, along the same lines (the structure's own axis and AP direction in the
mid-sagittal plane), sampled every 0.02 mm with the phantom's own painter: so a test can
check the read-out on the voxel grid (any size, spacing, orientation) against the truth.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import numpy as np

from spineseg.levels.convention import CANAL_VALUE
from spineseg.levels.measure import HEIGHT_POSITIONS
from spineseg.phantom import (_Grid, _Level, _disc_label_value, _draw_anatomy, _label_lut, _paint_anatomy,
                              _vertebra_label_value)

_STEP = 0.02
_REACH = 60.0


def _line(anat, point: np.ndarray, direction: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offsets mm, class labels, per-level values) along a sagittal line (u, v at w = 0) through ``point``."""
    n = int(2 * _REACH / _STEP) + 1
    d3 = np.array([direction[0], direction[1], 0.0])
    e1 = np.array([-direction[1], direction[0], 0.0])
    e2 = np.array([0.0, 0.0, 1.0])
    A = np.stack([d3 * _STEP, e1, e2], axis=1)
    b = np.array([point[0], point[1], 0.0]) - d3 * _REACH
    grid = _Grid((n, 1, 1), A, b, 1, 1, A, b)
    grid.level = np.zeros(grid.shape, np.uint8)
    _paint_anatomy(grid, anat)
    return (np.arange(n) * _STEP - _REACH, _label_lut()[grid.tissue[0, 0, :]], grid.level[0, 0, :].copy())


def _run(offsets: np.ndarray, inside: np.ndarray, at: float = 0.0) -> Optional[Tuple[float, float]]:
    """(start, end) of the run of ``inside`` containing offset ``at`` (or nearest to it)."""
    if not inside.any():
        return None
    edges = np.diff(np.concatenate([[0], inside.astype(np.int8), [0]]))
    starts, ends = np.where(edges == 1)[0], np.where(edges == -1)[0] - 1
    c = int(np.argmin(np.abs(offsets - at)))
    dist = np.where((starts <= c) & (ends >= c), 0, np.minimum(abs(starts - c), abs(ends - c)))
    k = int(np.argmin(dist))
    return float(offsets[starts[k]] - _STEP / 2), float(offsets[ends[k]] + _STEP / 2)


def _chord(anat, point, direction, value: int) -> Optional[Tuple[float, float]]:
    x, _, lev = _line(anat, point, direction)
    return _run(x, lev == value)


def _structure(anat, centre: np.ndarray, t: np.ndarray, n: np.ndarray, value: int, with_depth: bool
               ) -> Dict[str, Optional[float]]:
    out: Dict[str, Optional[float]] = {}
    ap = _chord(anat, centre, n, value)
    if ap is None:
        return out
    if with_depth:
        out["ap_depth_mm"] = ap[1] - ap[0]
    for key, f in HEIGHT_POSITIONS.items():
        h = _chord(anat, centre + (ap[0] + f * (ap[1] - ap[0])) * n, t, value)
        out[f"{key}_height_mm"] = None if h is None else h[1] - h[0]
    x, _, lev = _line(anat, centre, n)
    canal = (lev == CANAL_VALUE) & (x >= 0)
    hits = np.where(canal)[0]
    if hits.size:
        run = _run(x, canal, float(x[hits[0]]))
        out["canal_ap_mm"] = run[1] - run[0] if run else None
    return out


def true_measurements(seed: int) -> Dict[str, Dict[str, Optional[float]]]:
    """True measurements per structure name (``L3``, ``L4-L5``) of the phantom drawn for ``seed``.

    Bodies T10..L5 and the discs between them; the sacrum has none (as in the read-out).
    """
    anat = _draw_anatomy(np.random.default_rng(int(seed)))
    levels = anat["levels"]
    out: Dict[str, Dict[str, Optional[float]]] = {}
    for i, lv in enumerate(levels):
        if lv.sacral:
            continue
        out[lv.name] = _structure(anat, lv.center, lv.t, lv.n, _vertebra_label_value(lv.name), True)
        lo = levels[i + 1]
        mid = _Level("disc", (lv.point(lv.height / 2, 0) + lo.point(-lo.height / 2, 0)) / 2,
                     (lv.angle + lo.angle) / 2, 0, 0, 0, 0, False)
        name = f"{lv.name}-{'S1' if lo.sacral else lo.name}"
        out[name] = _structure(anat, mid.center, mid.t, mid.n, _disc_label_value(lv.name), False)
    return out
