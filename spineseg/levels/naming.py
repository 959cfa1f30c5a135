"""Name the instances: anchor on the sacrum, count vertebral bodies upwards, name discs by their gap.

A disc is named by the two bodies it lies between, never by counting disc components: a
disc the segmentation missed is then one missing structure, not a shift of every name.

The anchor, in order of preference:

1. **the sacrum**: the most caudal vertebral instance, with no disc below it, that is
   shaped unlike a lumbar body: fused segments (pieces with no disc between them), or
   much taller along the curve than the body above;
2. **the L5-S1 disc**: a disc below the most caudal body with no body below it, and room
   in the field of view below it (where the sacrum is, unlabelled: models trained on
   labels without the sacrum do this);
3. otherwise the most caudal body is taken for L5 and the names are marked unreliable.

Positions are arc lengths (mm) along the spine's curve, growing caudally.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from spineseg.levels.convention import SACRUM, disc_name, name_above, names_upwards

#: bodies closer than this (mm) along the curve with no disc between them are fused segments
FUSED_GAP_MM = 3.5
#: a caudal instance this much taller than the body above it is sacrum-shaped
SACRUM_HEIGHT_RATIO = 1.4
#: a body this much taller than the median may be two bodies joined (a missed disc)
MERGED_RATIO = 1.6
#: room (mm along the curve) needed below the lowest disc for a vertebra to be in view
ROOM_BELOW_MM = 15.0

ANCHOR_SACRUM = "sacrum"
ANCHOR_DISC = "L5-S1 disc"
ANCHOR_NONE = "none"


@dataclass
class Segment:
    """A body core along the curve: centre and extent (arc length, mm) of its body region."""

    s: float
    s_lo: float
    s_hi: float

    @property
    def height(self) -> float:
        return self.s_hi - self.s_lo


@dataclass
class Naming:
    """Names for the bodies (index -> name; fused segments share a name) and the disc groups."""

    body_names: List[Optional[str]]
    discs: List[tuple]  # (name, [disc piece indices])
    anchor: str
    reasons: List[str] = field(default_factory=list)

    @property
    def reliable(self) -> bool:
        return not self.reasons


def name_levels(bodies: List[Segment], discs: List[float], *, room_below_mm: float) -> Naming:
    """Names for bodies (any order) and disc pieces (their arc lengths).

    ``room_below_mm``: how far the field of view reaches below the most caudal structure
    along the curve; it tells a sacrum out of view from one the labels leave out.
    """
    reasons: List[str] = []
    order = sorted(range(len(bodies)), key=lambda i: bodies[i].s)
    disc_s = np.asarray(discs, dtype=float)
    if not order:
        reasons.append("no vertebral body found")
        groups = [("", list(range(len(discs))))] if discs else []
        return Naming([], groups, ANCHOR_NONE, reasons)

    def discs_between(a: float, b: float) -> List[int]:
        return [int(j) for j in np.where((disc_s > a) & (disc_s < b))[0]]

    # group bodies cranial -> caudal; fuse caudal segments with no disc and almost no gap between
    groups: List[List[int]] = [[i] for i in order]
    while len(groups) >= 2:
        upper, lower = groups[-2], groups[-1]
        up_hi = max(bodies[i].s_hi for i in upper)
        lo_lo = min(bodies[i].s_lo for i in lower)
        if lo_lo - up_hi < FUSED_GAP_MM and not discs_between(bodies[upper[-1]].s, bodies[lower[0]].s):
            groups[-2:] = [upper + lower]
        else:
            break
    ext = [(min(bodies[i].s_lo for i in g), max(bodies[i].s_hi for i in g), float(np.mean([bodies[i].s for i in g])))
           for g in groups]
    heights = np.array([hi - lo for lo, hi, _ in ext])
    median = float(np.median(heights[:-1])) if len(heights) > 1 else float(heights[0])

    bottom_lo, bottom_hi, bottom_s = ext[-1]
    below = [int(j) for j in np.where(disc_s > bottom_s)[0]]  # disc tissue below the lowest body's centre
    # taller than the body above it (not the median: bodies in view higher up are thoracic and smaller)
    sacrum_shaped = len(groups[-1]) >= 2 or (len(heights) > 1 and heights[-1] >= SACRUM_HEIGHT_RATIO * heights[-2])

    if sacrum_shaped and not below:
        anchor, lowest_name = ANCHOR_SACRUM, SACRUM
    elif below:
        anchor, lowest_name = ANCHOR_DISC, "L5"
        lowest_disc = float(disc_s[below].max())
        if room_below_mm - (lowest_disc - bottom_hi) < ROOM_BELOW_MM:
            anchor = ANCHOR_NONE
            reasons.append("the field of view ends just below the lowest disc: the sacrum is not in view, "
                           "the lowest body was taken for L5")
        if sacrum_shaped:
            reasons.append("the lowest vertebra is shaped like a sacrum but has a disc below it "
                           "(transitional vertebra?)")
    else:
        anchor, lowest_name = ANCHOR_NONE, "L5"
        if room_below_mm < ROOM_BELOW_MM:
            reasons.append("the sacrum is not in view: the lowest body was taken for L5")
        else:
            reasons.append("no sacrum and no L5-S1 disc found below the lowest body: it was taken for L5")

    names = names_upwards(lowest_name, len(groups))[::-1]  # cranial -> caudal like groups
    body_names: List[Optional[str]] = [None] * len(bodies)
    for g, name in zip(groups, names):
        for i in g:
            body_names[i] = name
    if any(n is None for n in names):
        reasons.append("more vertebrae above the anchor than there are names")

    # merged bodies: a body much taller than the median (the sacrum excepted)
    for k, (g, name) in enumerate(zip(groups, names)):
        if anchor == ANCHOR_SACRUM and k == len(groups) - 1:
            continue
        if len(heights) >= 3 and heights[k] >= MERGED_RATIO * median:
            reasons.append(f"{name} is {heights[k] / median:.1f}x as tall as the median body: "
                           "possibly two bodies with a missed disc")

    # discs: by the gap between neighbouring bodies
    disc_groups: List[tuple] = []
    assigned = set()
    for k in range(len(groups) - 1):
        members = discs_between(ext[k][2], ext[k + 1][2])
        up, lo = names[k], names[k + 1]
        assigned.update(members)
        if members:
            disc_groups.append((disc_name(up, lo) if up and lo else "", members))
        elif up and lo:
            reasons.append(f"no disc found between {up} and {lo}")
    above = [int(j) for j in np.where(disc_s <= ext[0][2])[0]]
    if above and names[0]:
        top = names[0]
        higher = name_above(top) if top else None
        disc_groups.insert(0, (disc_name(higher, top) if higher else "", above))
        assigned.update(above)
    rest = [j for j in range(len(discs)) if j not in assigned]
    if rest:
        if anchor == ANCHOR_SACRUM:
            reasons.append("disc tissue below the sacrum")
        disc_groups.append((disc_name(names[-1], "S1") if names[-1] == "L5" else "", rest))
    if any(not name for name, _ in disc_groups):
        reasons.append("some discs could not be named")
    return Naming(body_names, disc_groups, anchor, reasons)
