"""The per-level read-out: 3-class label map in, named instances with measurements out.

``read_levels(label_image)`` is the entry point; everything runs in the canonical frame
(D = slices, H = superior -> inferior, W = anterior -> posterior) in mm, so the result
does not depend on how the input stores its voxels.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from spineseg.geometry import CanonicalFrame
from spineseg.labels import CANAL, DISC, VERTEBRA
from spineseg.levels import instances as inst
from spineseg.levels.convention import CANAL_NAME, CANAL_VALUE, SACRUM, disc_value, vertebra_value
from spineseg.levels.curve import SpineCurve, fit_curve
from spineseg.levels.measure import measure
from spineseg.levels.naming import Segment, name_levels
from spineseg.levels.result import LevelsResult, Structure

#: disc specks within this distance (mm along the curve) of a disc join it
_SPECK_REACH_MM = 15.0
_CROP_MARGIN = 3
#: depth (mm, from the anterior surface) of the band in which a structure's extent along the curve is taken
_BAND_MM = 20.0


def read_levels(label: sitk.Image) -> LevelsResult:
    """Instances, names and measurements from a 3-class label map (1 vertebra, 2 disc, 3 canal)."""
    frame = CanonicalFrame.of(label, warn=False)
    return read_levels_canonical(frame.to_canonical(sitk.GetArrayViewFromImage(label)), frame)


def levels_image(result: LevelsResult, reference: sitk.Image) -> sitk.Image:
    """The per-level label map with the geometry of ``reference`` (the input or its 3-class map)."""
    return CanonicalFrame.of(reference, warn=False).image_from_canonical(result.canonical_labels)


def _crop(label: np.ndarray) -> Tuple[Tuple[slice, ...], np.ndarray]:
    nz = np.argwhere(label > 0)
    lo = np.maximum(nz.min(axis=0) - _CROP_MARGIN, 0)
    hi = np.minimum(nz.max(axis=0) + _CROP_MARGIN + 1, label.shape)
    lo[0], hi[0] = 0, label.shape[0]  # keep every slice: the mid-sagittal choice sees the whole stack
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi)), lo


def _centre(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    return np.argwhere(mask).mean(axis=0) * np.asarray(spacing, float)


def _extent(mask: np.ndarray, spacing: Sequence[float], curve: SpineCurve) -> Segment:
    """Centre and extent (arc length) of a structure; a local linear projection along the curve's tangent."""
    pts = np.argwhere(mask) * np.asarray(spacing, float)
    c = pts.mean(axis=0)
    s, _ = curve.project(c)
    t = curve.tangent(float(s[0]))
    # extent in the anterior part of the structure only, so that posterior elements still attached
    # (where the canal is not labelled) do not make a body look tall
    n = np.array([0.0, -t[2], t[1]])
    n /= np.linalg.norm(n) or 1.0
    if n[2] < 0:
        n = -n  # posterior
    ap = pts @ n
    band = ap - np.percentile(ap, 1.0) <= _BAND_MM
    along = (pts[band] if band.sum() >= 10 else pts) - c
    lo, hi = np.percentile(along @ t, [1.0, 99.0])
    return Segment(float(s[0]), float(s[0] + lo), float(s[0] + hi))


def _room_below(curve: SpineCurve, s_from: float, offset_mm: np.ndarray, full_mm: np.ndarray) -> float:
    """How far (mm along the curve) the image reaches caudally beyond arc length ``s_from``."""
    j = int(np.searchsorted(curve.s, s_from))
    pts = curve.points[j:] + offset_mm
    inside = np.all((pts[:, 1:] >= 0) & (pts[:, 1:] <= full_mm[1:]), axis=1)
    if inside.size == 0:
        return 0.0
    out = np.where(~inside)[0]
    end = out[0] if out.size else len(inside) - 1
    return float(curve.s[j + end] - s_from) if end > 0 else 0.0


def read_levels_canonical(label: np.ndarray, frame: CanonicalFrame) -> LevelsResult:
    """The read-out on a canonical (D, H, W) 3-class array with the frame it came from."""
    label = np.asarray(label)
    spacing = tuple(float(s) for s in frame.canonical_spacing)
    out = np.zeros(label.shape, np.uint8)
    if not (label > 0).any():
        return LevelsResult(out, [], False, ["the label map is empty"], "none")
    box, lo = _crop(label)
    lab = label[box]
    offset_mm = lo * np.asarray(spacing)
    full_mm = (np.asarray(label.shape) - 1) * np.asarray(spacing)
    vert, disc, canal = lab == VERTEBRA.value, lab == DISC.value, lab == CANAL.value

    front = inst.canal_front(canal, spacing)
    anterior = inst.anterior_region(lab.shape, spacing, front)
    cores = inst.body_cores(vert, anterior, spacing)
    pieces = inst.disc_pieces(disc, spacing)
    voxel = float(np.prod(spacing))
    big = [p for p in pieces if p.sum() * voxel >= inst.MIN_DISC_MM3]
    specks = [p for p in pieces if p.sum() * voxel < inst.MIN_DISC_MM3]
    centres = [c.centre_mm for c in cores] + [_centre(p, spacing) for p in big]
    reasons: List[str] = []
    if len(centres) >= 3:
        c_arr = np.array(centres)
        if np.ptp(c_arr[:, 0]) > np.hypot(np.ptp(c_arr[:, 1]), np.ptp(c_arr[:, 2])):
            reasons.append("the spine runs across the slices: the read-out assumes sagittal slices")
    if front is None:
        reasons.append("no spinal canal found: bodies were not separated from the posterior elements")
    if not centres:
        local = np.zeros(lab.shape, np.uint8)
        local[canal] = CANAL_VALUE
        out[box] = local
        structures = _canal_structure(out, canal, spacing, frame, lo)
        return LevelsResult(out, structures, False, reasons + ["no vertebral body or disc found"], "none")

    curve = fit_curve(np.array(centres))
    # cores much taller than the median along the curve may be two bodies: erode them apart
    if len(cores) >= 3:
        heights = np.array([_extent(c.mask, spacing, curve).height for c in cores])
        median = float(np.median(heights))
        split: List[inst.Core] = []
        for c, h in zip(cores, heights):
            parts = inst.split_core(c, spacing) if h >= inst.MERGED_HEIGHT_RATIO * median else None
            split.extend(parts or [c])
        if len(split) != len(cores):
            cores = split
            curve = fit_curve(np.array([c.centre_mm for c in cores] + [_centre(p, spacing) for p in big]))

    markers = np.zeros(lab.shape, np.int32)
    for k, c in enumerate(cores):
        markers[c.mask] = k + 1
    owner = inst.watershed_assign(vert, markers, spacing)
    loose = vert & (owner == 0)
    if loose.any() and owner.any():
        owner[loose] = inst.nearest_owner(owner, spacing)[loose]

    segments = []
    body_masks = []
    for k, c in enumerate(cores):
        body = (owner == k + 1) & anterior
        if not body.any():
            body = c.mask
        body_masks.append(body)
        segments.append(_extent(body, spacing, curve))
    disc_segments = [_extent(p, spacing, curve) for p in big]
    bottom = max((sg.s_hi for sg in segments), default=max(sg.s_hi for sg in disc_segments))
    room = _room_below(curve, bottom, offset_mm, full_mm)
    naming = name_levels(segments, [d.s for d in disc_segments], room_below_mm=room)
    reasons.extend(naming.reasons)

    # the per-level map
    local = np.zeros(lab.shape, np.uint8)
    entries: List[Tuple[float, str, str, int, np.ndarray, np.ndarray]] = []  # (s, kind, name, value, voxels, body)
    by_name: Dict[str, List[int]] = {}
    for k, name in enumerate(naming.body_names):
        if name:
            by_name.setdefault(name, []).append(k)
    for name, ks in by_name.items():
        value = vertebra_value(name)
        voxels = np.isin(owner, [k + 1 for k in ks])
        body = np.logical_or.reduce([body_masks[k] for k in ks])
        local[voxels] = value
        entries.append((float(np.mean([segments[k].s for k in ks])), "vertebra", name, value, voxels, body))
    group_s = []
    for name, members in naming.discs:
        voxels = np.logical_or.reduce([big[j] for j in members])
        s = float(np.mean([disc_segments[j].s for j in members]))
        group_s.append(s)
        if not name:
            continue
        entries.append((s, "disc", name, disc_value(name.split("-")[0]), voxels, voxels))
    for sp_mask in specks:  # disc specks join the nearest disc along the curve
        if not group_s:
            break
        s_sp = curve.project(_centre(sp_mask, spacing))[0][0]
        j = int(np.argmin(np.abs(np.asarray(group_s) - s_sp)))
        if abs(group_s[j] - s_sp) <= _SPECK_REACH_MM and naming.discs[j][0]:
            entry = next(e for e in entries if e[1] == "disc" and e[2] == naming.discs[j][0])
            entry[4][sp_mask] = True
    entries.sort(key=lambda e: e[0])
    for _, kind, name, value, voxels, _ in entries:
        local[voxels] = value
    local[canal] = CANAL_VALUE
    out[box] = local

    structures: List[Structure] = []
    for s, kind, name, value, voxels, body in entries:
        idx = np.argwhere(voxels) + lo
        last = np.asarray(label.shape[1:]) - 1
        partial = bool((idx[:, 1:].min(axis=0) == 0).any() or (idx[:, 1:].max(axis=0) == last).any())
        m: Dict[str, Optional[float]] = {}
        if not partial and not (kind == "vertebra" and name == SACRUM):
            m = measure(body, canal, spacing, curve.tangent(s), kind)
        structures.append(Structure(value, name, kind, int(voxels.sum()), frame.physical_point(idx.mean(axis=0)), m,
                                    partial))
    structures.extend(_canal_structure(out, canal, spacing, frame, lo))
    return LevelsResult(out, structures, not reasons, reasons, naming.anchor)


def _canal_structure(out: np.ndarray, canal: np.ndarray, spacing: Sequence[float], frame: CanonicalFrame,
                     lo: np.ndarray) -> List[Structure]:
    if not canal.any():
        return []
    centroid = frame.physical_point(np.argwhere(canal).mean(axis=0) + lo)
    return [Structure(CANAL_VALUE, CANAL_NAME, "canal", int(canal.sum()), centroid,
                      {"volume_mm3": float(canal.sum() * float(np.prod(spacing)))})]
