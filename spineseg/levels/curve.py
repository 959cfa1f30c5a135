"""The spine's curve: a smooth line through vertebral-body and disc centres, and positions along it.

Structures are ordered by arc length along this curve, never along an image axis, so a
lordotic or scoliotic spine, or a tilted field of view, orders the same way. Coordinates
are canonical millimetres (D, H, W) * spacing; the canonical H axis runs superior ->
inferior, which fixes which end of the curve is caudal.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

#: samples per mm of the dense curve
_STEP_MM = 0.5
#: the curve reaches this far beyond the outermost centres (mm)
_EXTEND_MM = 60.0


@dataclass(frozen=True)
class SpineCurve:
    """Dense samples (N, 3) in canonical mm, ordered cranial -> caudal, with arc length ``s`` (mm)."""

    points: np.ndarray
    s: np.ndarray

    def project(self, pts: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(arc length, distance) of each point's nearest curve sample."""
        pts = np.atleast_2d(np.asarray(pts, dtype=np.float64))
        s_out = np.empty(len(pts))
        d_out = np.empty(len(pts))
        chunk = max(1, 2_000_000 // max(len(self.points), 1))
        for i in range(0, len(pts), chunk):
            p = pts[i:i + chunk]
            d2 = ((p[:, None, :] - self.points[None, :, :]) ** 2).sum(axis=2)
            j = np.argmin(d2, axis=1)
            s_out[i:i + chunk] = self.s[j]
            d_out[i:i + chunk] = np.sqrt(d2[np.arange(len(p)), j])
        return s_out, d_out

    def tangent(self, s: float) -> np.ndarray:
        """Unit direction of the curve at arc length ``s``, pointing caudally."""
        j = int(np.clip(np.searchsorted(self.s, s), 1, len(self.s) - 1))
        lo, hi = max(0, j - 10), min(len(self.s) - 1, j + 10)
        t = self.points[hi] - self.points[lo]
        return t / (np.linalg.norm(t) or 1.0)


def fit_curve(centres: np.ndarray) -> SpineCurve:
    """Fit the curve through structure centres (K, 3) in canonical mm.

    The centres are ordered along their principal axis, each coordinate is fitted
    by a polynomial (degree up to 3) of that position, and the result is sampled
    densely and oriented so that arc length grows caudally (canonical +H).
    """
    c = np.asarray(centres, dtype=np.float64).reshape(-1, 3)
    if len(c) == 0:
        raise ValueError("no structure centres to fit the spine curve through")
    mean = c.mean(axis=0)
    if len(c) >= 2:
        _, _, vt = np.linalg.svd(c - mean, full_matrices=False)
        axis = vt[0]
    else:
        axis = np.array([0.0, 1.0, 0.0])
    if axis[1] < 0:
        axis = -axis
    t = (c - mean) @ axis
    degree = int(min(3, max(0, len(c) - 1)))
    ts = np.arange(t.min() - _EXTEND_MM, t.max() + _EXTEND_MM + _STEP_MM, _STEP_MM)
    if degree == 0:
        pts = mean + ts[:, None] * axis
    else:
        pts = np.empty((len(ts), 3))
        scale = max(float(np.ptp(t)), 1.0)
        for k in range(3):
            coef = np.polyfit(t / scale, c[:, k], degree)
            inner = np.polyval(coef, np.clip(ts, t.min(), t.max()) / scale)
            # beyond the outermost centres continue straight along the end tangent (no polynomial run-away)
            d = np.polyval(np.polyder(coef), np.clip(ts, t.min(), t.max()) / scale) / scale
            pts[:, k] = inner + (ts - np.clip(ts, t.min(), t.max())) * d
    if pts[-1, 1] < pts[0, 1]:
        pts = pts[::-1]
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    return SpineCurve(points=pts, s=s)
