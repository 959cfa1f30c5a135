"""The review flag: should a person check this case first, and why.

It combines what the network is unsure of (flip test-time augmentation: the share of
segmented voxels where the mirrored passes disagree) with whether the read-out is
anatomically plausible: enough levels, a disc between every pair of adjacent vertebrae,
body and disc heights inside adult ranges, and no sizeable fragment far from the spine.
A flag means "look at this one", never a finding; the reasons say what was seen, in numbers.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from spineseg.geometry import CanonicalFrame
from spineseg.levels.convention import SACRUM, disc_name
from spineseg.levels.result import LevelsResult, Review

#: flips disagreeing on more than 1 in 20 segmented voxels is more than the boundary shell of a good segmentation
UNCERTAINTY_LIMIT = 0.05
#: fewer vertebrae than this: a sagittal lumbar scan shows at least L2 to S1, so bodies were missed or merged
MIN_VERTEBRAE = 4
#: vertebral body heights (anterior, middle, posterior) outside this range (mm) are not an adult T10-L5 body
BODY_HEIGHT_MM = (12.0, 45.0)
#: body AP depth outside this range (mm) is not an adult thoracolumbar body
BODY_DEPTH_MM = (18.0, 65.0)
#: disc heights (mm) above this are two discs or a disc merged with bone; thin discs are real and not flagged
DISC_HEIGHT_MAX_MM = 22.0
#: segmented pieces smaller than this (mm^3, a 4.6 mm cube) are specks that change no level or measurement
MIN_FRAGMENT_MM3 = 100.0
#: a piece this far (mm) from the largest one (the spine) is not attached anatomy (posterior elements touch it)
FRAGMENT_DISTANCE_MM = 10.0


def fragments_far_from_spine(label: np.ndarray, spacing: Sequence[float]) -> List[Tuple[float, float]]:
    """(volume mm^3, distance mm) of each foreground piece of a canonical label map that is big and far
    from the largest piece (the spine), largest first."""
    fg = sitk.GetImageFromArray((np.asarray(label) > 0).astype(np.uint8))
    fg.SetSpacing(tuple(float(s) for s in reversed(spacing)))
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(fg, True), sortByObjectSize=True)
    parts = sitk.GetArrayFromImage(cc)
    n = int(parts.max())
    if n < 2:
        return []
    voxel = float(np.prod(spacing))
    sizes = np.bincount(parts.ravel(), minlength=n + 1) * voxel
    big = [k for k in range(2, n + 1) if sizes[k] >= MIN_FRAGMENT_MM3]
    if not big:
        return []
    spine = sitk.Cast(cc == 1, sitk.sitkUInt8)
    distance = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(spine, insideIsPositive=False,
                                                                   squaredDistance=False, useImageSpacing=True))
    out = []
    for k in big:
        d = float(distance[parts == k].min())
        if d > FRAGMENT_DISTANCE_MM:
            out.append((float(sizes[k]), d))
    return out


def _outside(value: Optional[float], lo: float, hi: float) -> bool:
    return value is not None and not lo <= value <= hi


def plausibility_reasons(levels: LevelsResult) -> List[str]:
    """What in the read-out does not look like a lumbar spine (empty: nothing)."""
    reasons: List[str] = []
    vertebrae = [s for s in levels.structures if s.kind == "vertebra"]
    discs = {s.name for s in levels.structures if s.kind == "disc"}
    if len(vertebrae) < MIN_VERTEBRAE:
        reasons.append(f"only {len(vertebrae)} vertebrae found (a lumbar scan shows at least {MIN_VERTEBRAE})")
    names = [s.name for s in vertebrae]
    for upper, lower in zip(names, names[1:]):
        if disc_name(upper, lower) not in discs:
            reasons.append(f"no disc between {upper} and {lower}")
    for s in vertebrae:
        if s.name == SACRUM or s.partial:  # a body cut by the field of view is not measured
            continue
        m = s.measurements
        for where in ("anterior", "middle", "posterior"):
            h = m.get(f"{where}_height_mm")
            if _outside(h, *BODY_HEIGHT_MM):
                reasons.append(f"{s.name} {where} height {h:.1f} mm is outside {BODY_HEIGHT_MM[0]:g}-{BODY_HEIGHT_MM[1]:g} mm")
        depth = m.get("ap_depth_mm")
        if _outside(depth, *BODY_DEPTH_MM):
            reasons.append(f"{s.name} AP depth {depth:.1f} mm is outside {BODY_DEPTH_MM[0]:g}-{BODY_DEPTH_MM[1]:g} mm")
    for s in levels.structures:
        if s.kind != "disc" or s.partial:
            continue
        for where in ("anterior", "middle", "posterior"):
            h = s.measurements.get(f"{where}_height_mm")
            if h is not None and h > DISC_HEIGHT_MAX_MM:
                reasons.append(f"{s.name} disc {where} height {h:.1f} mm is above {DISC_HEIGHT_MAX_MM:g} mm")
    return reasons


def review_case(levels: LevelsResult, label: sitk.Image, uncertainty: Optional[float]) -> Review:
    """The review block of one case: ``levels`` is ``read_levels(label)`` of the 3-class map ``label``,
    ``uncertainty`` the flip TTA uncertainty (None: TTA was not run, so the flag rests on plausibility
    alone and the block says ``uncertainty: null``)."""
    frame = CanonicalFrame.of(label, warn=False)
    canonical = frame.to_canonical(sitk.GetArrayViewFromImage(label))
    reasons: List[str] = []
    if uncertainty is not None and uncertainty > UNCERTAINTY_LIMIT:
        reasons.append(f"flipped predictions disagree on {100 * uncertainty:.1f}% of the segmented voxels "
                       f"(limit {100 * UNCERTAINTY_LIMIT:g}%)")
    if not levels.levels_reliable:
        reasons.extend(f"level names unreliable: {r}" for r in levels.levels_reasons)
    reasons.extend(plausibility_reasons(levels))
    for volume, distance in fragments_far_from_spine(canonical, frame.canonical_spacing):
        reasons.append(f"a {volume:.0f} mm^3 fragment lies {distance:.0f} mm from the spine")
    return Review(flag=bool(reasons), reasons=reasons, uncertainty=uncertainty)
