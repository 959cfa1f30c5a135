"""Measurements per level, in mm, in the mid-sagittal region of each structure (see docs/levels.md).

Each structure gets its own frame in the sagittal plane through its centroid: the axis
``t`` (cranio-caudal: the principal axis of its sagittal profile closest to the spine's
curve, or the curve's tangent where the profile is too round to say) and ``n`` (antero-
posterior, perpendicular to ``t``, pointing posteriorly). Lengths are chords: how far a
line stays inside the structure, sampled every 0.05 mm on the voxel grid.

- AP depth (bodies): the chord along ``n`` through the centroid.
- Anterior, middle and posterior height (bodies and discs): chords along ``t`` at 15%,
  50% and 85% of that AP chord, from its anterior end.
- Disc volume: voxel count times voxel volume (the whole 3D disc).
- Canal AP diameter at a disc or mid-body: the canal's chord along that structure's ``n``,
  the first canal run posterior to the structure's centroid.

With slices thicker than 3 mm the mid-sagittal region is the one slice through the
centroid; with thinner slices every slice within 1.5 mm of it, and the median is taken.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

#: fractions of the AP chord (from anterior) where heights are taken
HEIGHT_POSITIONS = {"anterior": 0.15, "middle": 0.5, "posterior": 0.85}
_STEP_MM = 0.05
_REACH_MM = 80.0
#: principal axes of a profile are trusted when its second moments differ by this ratio
_ROUND_RATIO = 1.3
_MAX_AXIS_DEVIATION_DEG = 25.0


def mid_sagittal_slices(mask: np.ndarray, spacing: Sequence[float]) -> List[int]:
    """Canonical D indices of the structure's mid-sagittal region (see the module docstring)."""
    d = np.where(mask.any(axis=(1, 2)))[0]
    if d.size == 0:
        return []
    counts = mask.sum(axis=(1, 2))
    centre = float((np.arange(mask.shape[0]) * counts).sum() / counts.sum())
    if spacing[0] > 3.0:
        return [int(round(centre))]
    half = 1.5 / spacing[0]
    return [int(i) for i in d if abs(i - centre) <= half + 1e-9] or [int(round(centre))]


def largest_piece(mask2d: np.ndarray) -> np.ndarray:
    if not mask2d.any():
        return mask2d
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(sitk.GetImageFromArray(mask2d.astype(np.uint8))), sortByObjectSize=True)
    return sitk.GetArrayFromImage(cc) == 1


def chord(mask2d: np.ndarray, spacing2d: Sequence[float], point: np.ndarray, direction: np.ndarray
          ) -> Optional[Tuple[float, float]]:
    """(start, end) offsets (mm, along ``direction``) of the run of ``mask2d`` through ``point``.

    ``point`` and ``direction`` are in-plane mm (H, W). When the point is outside the
    mask the nearest run is used; None when the line misses the mask.
    """
    x = np.arange(-_REACH_MM, _REACH_MM + _STEP_MM / 2, _STEP_MM)
    pts = point[None, :] + x[:, None] * direction[None, :]
    idx = np.rint(pts / np.asarray(spacing2d, float)).astype(np.int64)
    ok = (idx[:, 0] >= 0) & (idx[:, 0] < mask2d.shape[0]) & (idx[:, 1] >= 0) & (idx[:, 1] < mask2d.shape[1])
    inside = np.zeros(len(x), bool)
    inside[ok] = mask2d[idx[ok, 0], idx[ok, 1]]
    if not inside.any():
        return None
    edges = np.diff(np.concatenate([[0], inside.astype(np.int8), [0]]))
    starts, ends = np.where(edges == 1)[0], np.where(edges == -1)[0] - 1
    centre = len(x) // 2
    dist = np.where((starts <= centre) & (ends >= centre), 0, np.minimum(abs(starts - centre), abs(ends - centre)))
    k = int(np.argmin(dist))
    return float(x[starts[k]] - _STEP_MM / 2), float(x[ends[k]] + _STEP_MM / 2)


def _length(run: Optional[Tuple[float, float]]) -> Optional[float]:
    return None if run is None else run[1] - run[0]


def profile_frame(profile: np.ndarray, spacing2d: Sequence[float], tangent2d: np.ndarray
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centroid, t, n) of a sagittal profile, in-plane mm (H, W); ``n`` points posteriorly (+W)."""
    idx = np.argwhere(profile).astype(np.float64) * np.asarray(spacing2d, float)
    c = idx.mean(axis=0)
    tangent2d = tangent2d / (np.linalg.norm(tangent2d) or 1.0)
    t = tangent2d
    if len(idx) >= 3:
        cov = np.cov((idx - c).T)
        evals, evecs = np.linalg.eigh(cov)
        if evals[0] > 0 and evals[1] / evals[0] >= _ROUND_RATIO:
            cand = evecs[:, int(np.argmax(np.abs(evecs.T @ tangent2d)))]
            cand = cand if cand @ tangent2d >= 0 else -cand
            if np.degrees(np.arccos(min(1.0, float(cand @ tangent2d)))) <= _MAX_AXIS_DEVIATION_DEG:
                t = cand
    n = np.array([-t[1], t[0]])
    if n[1] < 0:
        n = -n
    return c, t, n


def _heights(profile: np.ndarray, sp: Sequence[float], c: np.ndarray, t: np.ndarray, n: np.ndarray
             ) -> Dict[str, Optional[float]]:
    ap = chord(profile, sp, c, n)
    out: Dict[str, Optional[float]] = {f"{k}_height_mm": None for k in HEIGHT_POSITIONS}
    out["ap_depth_mm"] = _length(ap)
    if ap is None:
        return out
    for key, f in HEIGHT_POSITIONS.items():
        p = c + (ap[0] + f * (ap[1] - ap[0])) * n
        out[f"{key}_height_mm"] = _length(chord(profile, sp, p, t))
    return out


def _canal_ap(canal2d: Optional[np.ndarray], sp: Sequence[float], c: np.ndarray, n: np.ndarray) -> Optional[float]:
    if canal2d is None or not canal2d.any():
        return None
    x = np.arange(0.0, _REACH_MM, _STEP_MM)
    pts = c[None, :] + x[:, None] * n[None, :]
    idx = np.rint(pts / np.asarray(sp, float)).astype(np.int64)
    ok = (idx[:, 0] >= 0) & (idx[:, 0] < canal2d.shape[0]) & (idx[:, 1] >= 0) & (idx[:, 1] < canal2d.shape[1])
    inside = np.zeros(len(x), bool)
    inside[ok] = canal2d[idx[ok, 0], idx[ok, 1]]
    hits = np.where(inside)[0]
    if hits.size == 0:
        return None
    first = hits[0]
    return _length(chord(canal2d, sp, c + x[first] * n, n))


def measure(mask: np.ndarray, canal: Optional[np.ndarray], spacing: Sequence[float], tangent: np.ndarray,
            kind: str) -> Dict[str, Optional[float]]:
    """Measurements of one structure (``kind`` "vertebra": its body region; "disc") on canonical arrays.

    ``tangent`` is the spine curve's caudal direction (canonical, 3D) at the structure.
    """
    sp = (float(spacing[1]), float(spacing[2]))
    t2 = np.asarray(tangent, float)[1:]
    per_slice: List[Dict[str, Optional[float]]] = []
    for d in mid_sagittal_slices(mask, spacing):
        profile = largest_piece(mask[d])
        if profile.sum() < 3:
            continue
        c, t, n = profile_frame(profile, sp, t2)
        m = _heights(profile, sp, c, t, n)
        m["canal_ap_mm"] = _canal_ap(None if canal is None else canal[d], sp, c, n)
        per_slice.append(m)
    keys = (["anterior_height_mm", "middle_height_mm", "posterior_height_mm"]
            + (["ap_depth_mm"] if kind == "vertebra" else []) + ["canal_ap_mm"])
    out: Dict[str, Optional[float]] = {}
    for k in keys:
        vals = [m[k] for m in per_slice if m.get(k) is not None]
        out[k] = float(np.median(vals)) if vals else None
    if kind == "disc":
        out["volume_mm3"] = float(mask.sum() * float(np.prod(spacing)))
    return out
