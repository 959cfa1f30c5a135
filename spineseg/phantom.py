"""A synthetic thick-slice T2 lumbar spine phantom with labels, for tests, demos and benchmarks.

Real data cannot ship with the code and is slow to read; the phantom gives any
size, spacing and orientation on request, deterministic for a seed, with the
difficulties that matter for thick-slice sagittal MR: structures that change
across few thick slices (partial volume), a smooth coil bias field and Rician
noise.

Anatomy lives in a patient frame in mm: ``u`` superior->inferior, ``v``
anterior->posterior, ``w`` right->left (LPS: w = +x, v = +y, u = -z, up to a
small random tilt). T11 to L5 and the top of the sacrum sit along a lordotic
curve; vertebral bodies are rounded cylinders with concave endplates and a dark
cortical shell, posterior elements are ellipsoidal capsules, discs fill the gaps
between endplates (bright nucleus, dark annulus), the dural sac (bright CSF, the
darker cord inside it) runs posterior to the bodies in a canal lined by epidural
fat, and soft tissue (subcutaneous fat, muscle, viscera, the aorta and vena cava)
fills the body outline. Tissues are painted on a grid supersampled along the
slice axis; the image is the sub-slice average, the label the sub-slice majority.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from spineseg.errors import InputError
from spineseg.levels.convention import CANAL_VALUE, SACRUM_VALUE, disc_value, vertebra_value

__all__ = ["Phantom", "make_phantom", "ORIENTATIONS", "LEVEL_NAMES"]

#: Direction matrices (row-major, as SimpleITK's GetDirection) of the named orientations.
#: Columns are the LPS directions of image axes x, y, z; slices are always along z.
ORIENTATIONS: Dict[str, Tuple[float, ...]] = {
    # x anterior->posterior, y superior->inferior, z right->left
    "sagittal": (0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0),
    # x right->left, y anterior->posterior, z inferior->superior
    "axial": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
    # x right->left, y superior->inferior, z anterior->posterior
    "coronal": (1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0),
}

LEVEL_NAMES: Tuple[str, ...] = ("T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1", "S2", "S3")
_L1, _L3, _L4, _S1 = (LEVEL_NAMES.index(n) for n in ("L1", "L3", "L4", "S1"))

# ------------------------------------------------------------------ tissues
AIR, FAT, MUSCLE, VISCERA, VESSEL, LIGAMENT, CORTEX, EPIDURAL, CSF, CORD, ANNULUS = range(11)
MARROW0 = 16  # + vertebra index: per-vertebra marrow brightness
NUCLEUS0 = 32  # + disc index: per-disc nucleus brightness (degeneration)
N_TISSUES = 48

# T2 TSE-like mean intensities (CSF = 1000) and texture amplitudes
_BASE_INTENSITY = {AIR: 0.0, FAT: 760.0, MUSCLE: 210.0, VISCERA: 280.0, VESSEL: 70.0,
                   LIGAMENT: 90.0, CORTEX: 60.0, EPIDURAL: 690.0, CSF: 1000.0, CORD: 360.0, ANNULUS: 150.0}
_TEXTURE = {AIR: 0.0, FAT: 0.06, MUSCLE: 0.12, VISCERA: 0.3, VESSEL: 0.2, LIGAMENT: 0.1,
            CORTEX: 0.1, EPIDURAL: 0.08, CSF: 0.03, CORD: 0.06, ANNULUS: 0.15}


_CANAL_LEVEL_VALUE = CANAL_VALUE


def _vertebra_label_value(name: str) -> int:
    """Per-level label of a phantom vertebra: the sacral segments S1..S3 are all the sacrum."""
    return SACRUM_VALUE if name.startswith("S") else vertebra_value(name)


def _disc_label_value(upper: str) -> int:
    return disc_value(upper)


def _label_lut() -> np.ndarray:
    lut = np.zeros(N_TISSUES, np.uint8)
    lut[CORTEX] = 1
    lut[MARROW0:NUCLEUS0] = 1
    lut[ANNULUS] = 2
    lut[NUCLEUS0:N_TISSUES] = 2
    lut[CSF] = lut[CORD] = 3
    return lut


@dataclass
class Phantom:
    """A generated volume: ``image`` (float32), ``label`` (uint8) and the anatomy drawn for the seed.

    ``levels`` (when asked for) is the per-level ground truth: the same voxels as ``label``
    with the values of :mod:`spineseg.levels.convention` (L1 = 20, L4-L5 = 123, canal 201).
    """

    image: sitk.Image
    label: sitk.Image
    params: Dict[str, Any] = field(default_factory=dict)
    levels: Optional[sitk.Image] = None


# ------------------------------------------------------------------ anatomy parameters

@dataclass
class _Level:
    name: str
    center: np.ndarray  # (u, v) in mm
    angle: float  # radians from +u towards +v (axis tilt in the sagittal plane)
    height: float
    depth: float
    width: float
    concavity: float
    sacral: bool

    @property
    def t(self) -> np.ndarray:
        return np.array([math.cos(self.angle), math.sin(self.angle)])

    @property
    def n(self) -> np.ndarray:
        return np.array([-math.sin(self.angle), math.cos(self.angle)])

    def point(self, a: float, b: float) -> np.ndarray:
        """(u, v) of local coordinates a (along the axis, inferior) and b (posterior)."""
        return self.center + a * self.t + b * self.n


def _draw_anatomy(rng: np.random.Generator) -> Dict[str, Any]:
    """Random anatomy for one subject: level sizes and positions along a lordotic curve."""
    scale = rng.uniform(0.9, 1.1)
    heights = np.array([21, 22, 23.5, 25.5, 26.5, 27.5, 27.5, 26.5, 27, 21, 17.0])
    depths = np.array([27, 28, 30, 32, 33.5, 35, 35.5, 35, 38, 30, 23.0])
    widths = np.array([36, 38, 40, 42, 44, 46, 48, 50, 70, 60, 48.0])
    discs = np.array([4.5, 5.0, 6.0, 8.0, 9.0, 10.0, 10.5, 9.5, 2.0, 1.5])  # below each level
    heights = heights * scale * rng.uniform(0.94, 1.06, heights.size)
    depths = depths * scale * rng.uniform(0.95, 1.05, depths.size)
    widths = widths * scale * rng.uniform(0.95, 1.05, widths.size)
    degeneration = rng.uniform(0.0, 1.0, discs.size) ** 2  # 0 healthy .. 1 dark and thin
    degeneration[_L4:_S1] = np.maximum(degeneration[_L4:_S1], rng.uniform(0, 0.8, 2))  # L4-5, L5-S1 degenerate more often
    discs = discs * scale * rng.uniform(0.85, 1.15, discs.size) * (1.0 - 0.35 * degeneration)

    lordosis = math.radians(rng.uniform(45, 62))  # L1 upper to S1 upper endplate
    theta_l1 = -math.radians(rng.uniform(10, 18))  # so the lumbar column stands about upright
    sacral_slope = theta_l1 + lordosis
    fractions = np.array([0.0, 0.15, 0.33, 0.53, 0.75, 1.0])  # L1..L5, S1: most lordosis is low
    angles = np.concatenate([
        theta_l1 + np.radians([24, 16, 8]),  # T10-T12 (thoracic kyphosis above)
        theta_l1 + lordosis * fractions,
        [sacral_slope - math.radians(10), sacral_slope - math.radians(24)],  # S2, S3 curve forward
    ])
    angles[:_S1 + 1] += np.radians(rng.uniform(-2.5, 2.5, _S1 + 1))  # slight rotation of each vertebra

    levels: List[_Level] = []
    center = np.zeros(2)
    for i, name in enumerate(LEVEL_NAMES):
        if i > 0:
            prev = levels[-1]
            t_new = np.array([math.cos(angles[i]), math.sin(angles[i])])
            gap = discs[i - 1]
            center = prev.center + prev.t * (prev.height / 2 + gap / 2) + t_new * (gap / 2 + heights[i] / 2)
        levels.append(_Level(name, center.copy(), float(angles[i]), float(heights[i]), float(depths[i]),
                             float(widths[i]), float(rng.uniform(0.8, 2.0) * (i < _S1)), name.startswith("S")))
    shift = levels[_L3].center.copy()  # L3 body at the origin
    for lv in levels:
        lv.center = lv.center - shift
    return {
        "levels": levels,
        "degeneration": degeneration,
        "marrow": rng.uniform(0.85, 1.15, len(levels)),
        "canal_ap": rng.uniform(6.5, 8.5) * scale,  # dural sac radii (mm)
        "canal_lat": rng.uniform(9.0, 11.5) * scale,
        "epidural": rng.uniform(2.0, 5.0),  # dorsal epidural fat (mm)
        "conus_level": rng.uniform(_L1 - 0.7, _L1 + 1.2),  # cord ends between T12-L1 and L2
        "spinous_length": rng.uniform(20, 28) * scale,
        "back": rng.uniform(55, 75),  # canal to posterior skin, fat excluded (mm)
        "back_fat": rng.uniform(8, 35),
        "belly": rng.uniform(120, 190),  # anterior body wall to anterior skin (mm)
        "belly_fat": rng.uniform(10, 40),
        "half_width": rng.uniform(140, 175),
        "tilt": np.radians(rng.uniform(-1.5, 1.5, 2)),  # roll (about A-P) and yaw (about S-I)
        "fov_offset": np.array([rng.uniform(-5, 25), rng.uniform(-5, 15), rng.uniform(-2, 2)]),
    }


# ------------------------------------------------------------------ the painter

class _Grid:
    """Maps a box of anatomy coordinates to a view of the supersampled tissue array."""

    def __init__(self, size: Tuple[int, int, int], A: np.ndarray, b: np.ndarray, ss_axis: int, ss: int,
                 A_body: np.ndarray, b_body: np.ndarray):
        self.size = size  # image (x, y, z)
        self.ss_axis = ss_axis  # image axis supersampled
        self.ss = ss
        self.A = A  # anatomy = A @ index + b  (index: continuous image index x, y, z)
        self.b = b
        self.body_frame = (A_body, b_body)  # untilted frame: soft tissue, separable for axis-aligned scans
        shape_xyz = list(size)
        shape_xyz[ss_axis] *= ss
        self.shape = tuple(shape_xyz[::-1])  # numpy (z, y, x)
        self.tissue = np.zeros(self.shape, np.uint8)
        self.level: Optional[np.ndarray] = None  # per-level label values, painted alongside when asked
        self.current_level = 0  # the value labelled tissue painted now belongs to
        self._labelled = _label_lut() > 0

    def _index(self, axis: int, n: np.ndarray) -> np.ndarray:
        """Continuous image index of grid position n along an image axis."""
        if axis == self.ss_axis:
            return (n + 0.5) / self.ss - 0.5
        return n.astype(np.float64)

    def box(self, qmin: Sequence[float], qmax: Sequence[float], frame: Optional[Tuple[np.ndarray, np.ndarray]] = None):
        """(numpy slices, (u, v, w) broadcastable float32 arrays) for an anatomy AABB, or None when outside."""
        A, b = frame if frame is not None else (self.A, self.b)
        corners = np.array([[x, y, z] for x in (qmin[0], qmax[0]) for y in (qmin[1], qmax[1]) for z in (qmin[2], qmax[2])])
        idx = np.linalg.solve(A, (corners - b).T).T  # (8, 3) continuous image indices
        slices = [slice(0, 0)] * 3
        ranges = []
        for axis in range(3):
            lo, hi = idx[:, axis].min(), idx[:, axis].max()
            if axis == self.ss_axis:
                lo, hi = (lo + 0.5) * self.ss - 0.5, (hi + 0.5) * self.ss - 0.5
            n = self.shape[2 - axis]
            lo_i, hi_i = max(0, int(math.floor(lo))), min(n, int(math.ceil(hi)) + 1)
            if hi_i <= lo_i:
                return None
            slices[2 - axis] = slice(lo_i, hi_i)
            ranges.append(self._index(axis, np.arange(lo_i, hi_i)))
        coords = []
        for r in range(3):  # u, v, w
            total: Any = np.float32(b[r])
            for axis in range(3):
                coef = A[r, axis]
                if abs(coef) > 1e-12:
                    shape = [1, 1, 1]
                    shape[2 - axis] = -1
                    total = total + (coef * ranges[axis]).astype(np.float32).reshape(shape)
            coords.append(np.asarray(total, np.float32))
        return tuple(slices), coords

    def paint(self, qmin, qmax, fn: Callable[..., List[Tuple[np.ndarray, int]]], body_frame: bool = False) -> None:
        """Evaluate ``fn(u, v, w) -> [(mask, tissue), ...]`` in the box and paint the masks in order."""
        found = self.box(qmin, qmax, self.body_frame if body_frame else None)
        if found is None:
            return
        slices, (u, v, w) = found
        view = self.tissue[slices]
        level_view = None if self.level is None else self.level[slices]
        for mask, tissue in fn(u, v, w):
            mask = np.broadcast_to(mask, view.shape)
            if isinstance(tissue, np.ndarray):
                view[mask] = np.broadcast_to(tissue, view.shape)[mask]
            else:
                view[mask] = tissue
            if level_view is not None:
                level_view[mask] = np.where(self._labelled[view[mask]], self.current_level, 0)


def _local(lv: _Level, u, v, w, cw: float = 0.0):
    """Local (a along the axis, b posterior, w lateral) coordinates of a level."""
    du, dv = u - np.float32(lv.center[0]), v - np.float32(lv.center[1])
    c, s = np.float32(math.cos(lv.angle)), np.float32(math.sin(lv.angle))
    return du * c + dv * s, dv * c - du * s, w - np.float32(cw)


def _pow8(x):
    x = x * x
    x = x * x
    return x * x


def _level_box(lv: _Level, a0: float, a1: float, b0: float, b1: float, w0: float, w1: float):
    """Anatomy AABB of a local box of a level."""
    pts = np.array([lv.point(a, b) for a in (a0, a1) for b in (b0, b1)])
    return [pts[:, 0].min(), pts[:, 1].min(), w0], [pts[:, 0].max(), pts[:, 1].max(), w1]


def _capsule(lv: _Level, grid: _Grid, p0, p1, radii, marrow: int, shell: float = 0.55) -> None:
    """Ellipsoidal capsule of bone between local points p0, p1 (a, b, w) with radii (ra, rb, rw)."""
    p0, p1, r = np.asarray(p0, float), np.asarray(p1, float), np.asarray(radii, float)
    lo, hi = np.minimum(p0, p1) - r, np.maximum(p0, p1) + r
    qmin, qmax = _level_box(lv, lo[0], hi[0], lo[1], hi[1], lo[2], hi[2])
    q0, d = p0 / r, (p1 - p0) / r
    dd = float(d @ d) or 1.0

    def fn(u, v, w):
        a, b, ww = _local(lv, u, v, w)
        x, y, z = a / np.float32(r[0]) - np.float32(q0[0]), b / np.float32(r[1]) - np.float32(q0[1]), ww / np.float32(r[2]) - np.float32(q0[2])
        t = np.clip((x * np.float32(d[0]) + y * np.float32(d[1]) + z * np.float32(d[2])) / np.float32(dd), 0, 1)
        x, y, z = x - t * np.float32(d[0]), y - t * np.float32(d[1]), z - t * np.float32(d[2])
        r2 = x * x + y * y + z * z
        return [(r2 <= 1.0, CORTEX), (r2 <= shell * shell, marrow)]

    grid.paint(qmin, qmax, fn)


def _tube(grid: _Grid, points: np.ndarray, radii_ap: np.ndarray, radii_lat: np.ndarray, tissue: int) -> None:
    """A tube through sagittal points (u, v) with elliptical cross-section (A-P, lateral radii per point)."""
    for i in range(len(points) - 1):
        p0, p1 = points[i], points[i + 1]
        r0, r1 = float(radii_ap[i]), float(radii_ap[i + 1])
        l0, l1 = float(radii_lat[i]), float(radii_lat[i + 1])
        if max(r0, r1) <= 0 or max(l0, l1) <= 0:
            continue
        rmax, lmax = max(r0, r1), max(l0, l1)
        qmin = [min(p0[0], p1[0]) - rmax, min(p0[1], p1[1]) - rmax, -lmax]
        qmax = [max(p0[0], p1[0]) + rmax, max(p0[1], p1[1]) + rmax, lmax]
        d = p1 - p0
        length2 = float(d @ d) or 1.0

        def fn(u, v, w, p0=p0, d=d, length2=length2, r0=r0, r1=r1, l0=l0, l1=l1):
            du, dv = u - np.float32(p0[0]), v - np.float32(p0[1])
            t = np.clip((du * np.float32(d[0]) + dv * np.float32(d[1])) / np.float32(length2), 0, 1)
            eu, ev = du - t * np.float32(d[0]), dv - t * np.float32(d[1])
            ra = np.float32(r0) + t * np.float32(r1 - r0)
            rl = np.maximum(np.float32(l0) + t * np.float32(l1 - l0), np.float32(1e-3))
            inside = (eu * eu + ev * ev) / np.maximum(ra * ra, np.float32(1e-6)) + (w / rl) ** 2 <= 1.0
            return [(inside & (ra > 0), tissue)]

        grid.paint(qmin, qmax, fn)


def _paint_anatomy(grid: _Grid, anat: Dict[str, Any]) -> None:
    levels: List[_Level] = anat["levels"]
    nlev = len(levels)
    ap, lat, epi = anat["canal_ap"], anat["canal_lat"], anat["epidural"]
    canal_front = [lv.depth / 2 + 0.5 for lv in levels]

    # --- soft tissue: body outline, subcutaneous fat, muscle, viscera (from the spine's sagittal course)
    us = np.array([lv.center[0] for lv in levels])
    canal_v = np.array([lv.point(0, canal_front[i] + ap)[1] for i, lv in enumerate(levels)])
    front_v = np.array([lv.point(0, -lv.depth / 2)[1] for lv in levels])
    back, back_fat, belly, belly_fat, hw = anat["back"], anat["back_fat"], anat["belly"], anat["belly_fat"], anat["half_width"]
    big = 1e4

    def soft(u, v, w):
        cv = np.interp(u, us[:_S1 + 1], canal_v[:_S1 + 1]).astype(np.float32)
        fv = np.interp(u, us[:_S1 + 1], front_v[:_S1 + 1]).astype(np.float32)
        w2 = (w / np.float32(hw)) ** 2
        buttock = np.float32(30.0) * np.clip((u - np.float32(us[_S1])) / np.float32(70.0), 0, 1)
        post = cv + np.float32(back + back_fat) - np.float32(60.0) * w2 + buttock  # posterior skin
        ant = fv - np.float32(belly + belly_fat) + np.float32(90.0) * w2  # anterior skin
        body = (v < post) & (v > ant) & (w2 < 1)
        inner = (v < post - np.float32(back_fat)) & (v > ant + np.float32(belly_fat)) & (w2 < 0.8)
        wall = inner & (v < ant + np.float32(belly_fat + 12))  # anterior abdominal wall muscle
        visc = inner & (v < fv - 4 + np.float32(180.0) * w2)  # viscera reach further back beside the spine
        return [(body, FAT), (inner, MUSCLE), (visc, VISCERA), (wall, MUSCLE)]

    grid.paint([-big, -big, -big], [big, big, big], soft, body_frame=True)

    # --- aorta (left) and inferior vena cava (right), anterior to the bodies, down to L4
    for tube_w, radius in ((10.0, 11.0), (-18.0, 12.0)):  # aorta left of the midline, IVC right
        pts = np.array([lv.point(0, -lv.depth / 2 - radius - 3) for lv in levels[:_L4 + 1]])

        def vessel(u, v, w, pts=pts, tube_w=tube_w, radius=radius):
            cv = np.interp(u, pts[:, 0], pts[:, 1]).astype(np.float32)
            r = np.float32(radius) * np.clip((np.float32(pts[-1, 0]) - u) / np.float32(25.0), 0, 1)  # tapers at L4
            inside = (v - cv) ** 2 + (w - np.float32(tube_w)) ** 2 <= r * r
            return [(inside, VESSEL)]
        grid.paint([pts[:, 0].min() - 20, pts[:, 1].min() - radius, tube_w - radius],
                   [pts[:, 0].max(), pts[:, 1].max() + radius, tube_w + radius], vessel)

    # --- bony canal (epidural fat) through all levels, painted before the bone so posterior elements stay outside
    sac_pts = np.array([lv.point(0, canal_front[i] + ap) for i, lv in enumerate(levels)])
    bony_ap = ap + epi / 2
    bony_pts = sac_pts + np.array([lv.n * (epi / 2) for lv in levels])
    taper = np.array([1.0] * _S1 + [0.9, 0.7, 0.45])

    # --- discs: the wedge between an upper body's lower endplate and a lower body's upper endplate
    for i in range(nlev - 1):
        up, lo = levels[i], levels[i + 1]
        if up.sacral:
            continue
        mid = _Level("disc", (up.point(up.height / 2, 0) + lo.point(-lo.height / 2, 0)) / 2, (up.angle + lo.angle) / 2,
                     0, max(up.depth, lo.depth), max(up.width, min(lo.width, 55.0)), 0, False)
        hd, hw_d = mid.depth / 2 + 1.0, mid.width / 2 + 0.5
        reach = up.height / 2 + lo.height / 2
        qmin, qmax = _level_box(mid, -reach, reach, -hd, hd, -hw_d, hw_d)
        nucleus = NUCLEUS0 + i
        deg = float(anat["degeneration"][i])
        grid.current_level = _disc_label_value(up.name)

        def disc(u, v, w, up=up, lo=lo, mid=mid, hd=hd, hw_d=hw_d, nucleus=nucleus, deg=deg):
            a_up, _, _ = _local(up, u, v, w)
            a_lo, _, _ = _local(lo, u, v, w)
            am, bm, wm = _local(mid, u, v, w)
            slab = (a_up > np.float32(up.height / 2 - up.concavity - 1.5)) & (a_lo < np.float32(-lo.height / 2 + lo.concavity + 1.5))
            r2 = (bm / np.float32(hd)) ** 2 + (wm / np.float32(hw_d)) ** 2
            gap = max(float(np.linalg.norm(lo.point(-lo.height / 2, 0) - up.point(up.height / 2, 0))), 1.0)
            nuc = (r2 + (am / np.float32(gap * 0.5 + 1.5 * (1 - deg))) ** 2 <= np.float32(0.42 * (1 - 0.5 * deg))) & slab
            return [(slab & (r2 <= 1), ANNULUS), (nuc & (r2 <= 1), nucleus)]

        grid.paint(qmin, qmax, disc)

    # --- vertebral bodies (rounded cylinders with concave endplates and a cortical shell)
    for i, lv in enumerate(levels):
        marrow = MARROW0 + i
        grid.current_level = _vertebra_label_value(lv.name)
        ha, hd, hwb = lv.height / 2, lv.depth / 2, lv.width / 2
        qmin, qmax = _level_box(lv, -ha, ha, -hd, hd, -hwb, hwb)

        def body(u, v, w, lv=lv, ha=ha, hd=hd, hwb=hwb, marrow=marrow):
            a, b, ww = _local(lv, u, v, w)
            r2 = (b / np.float32(hd)) ** 2 + (ww / np.float32(hwb)) ** 2
            ha_eff = np.float32(ha) - np.float32(lv.concavity) * np.maximum(1 - r2, 0)
            f = _pow8(a / ha_eff) + r2 * r2 * r2 * r2  # superquadric "radius" ** 8
            thick = np.float32(1.1 / min(ha, hd))
            inner = 1 - thick
            return [(f <= 1, CORTEX), (f <= inner ** 8, marrow)]

        grid.paint(qmin, qmax, body)

    # --- posterior elements: pedicles, laminae, spinous process, articular and transverse processes
    for i, lv in enumerate(levels):
        if lv.name == "S3":
            continue
        marrow = MARROW0 + i
        grid.current_level = _vertebra_label_value(lv.name)
        h, d, wd = lv.height, lv.depth, lv.width
        back_wall = canal_front[i] + 2 * bony_ap  # inner surface of the laminae (local b)
        ped_w = lat + 4.5  # pedicles just outside the bony canal
        if lv.sacral:  # median sacral crest and the posterior wall of the sacral canal
            _capsule(lv, grid, (-h * 0.35, back_wall + 3, 0), (h * 0.35, back_wall + 3, 0), (5, 3.5, lat + 4), marrow, 0.5)
            continue
        for side in (-1, 1):
            # pedicle: from the upper posterior body into the articular pillar
            _capsule(lv, grid, (-h * 0.18, d / 2 - 3, side * ped_w), (-h * 0.18, back_wall - 2, side * (ped_w + 1.5)),
                     (h * 0.2, 4.0, 4.0), marrow)
            # lamina: from the pillar to the midline, sloping downwards
            _capsule(lv, grid, (-h * 0.15, back_wall + 2, side * (ped_w + 1)), (h * 0.15, back_wall + 4, side * 2.0),
                     (h * 0.3, 3.2, 3.5), marrow)
            # superior and inferior articular processes (facet joints with the neighbours)
            _capsule(lv, grid, (-h * 0.2, back_wall - 1, side * (ped_w + 4)), (-h * 0.65, back_wall + 1, side * (ped_w + 6)),
                     (4.5, 4.5, 4.5), marrow)
            _capsule(lv, grid, (h * 0.2, back_wall + 3, side * (ped_w + 2)), (h * 0.62, back_wall + 6, side * (ped_w + 3)),
                     (4.0, 4.0, 4.0), marrow)
            # transverse process (only reaches the outermost slices)
            _capsule(lv, grid, (-h * 0.12, d / 2 + 6, side * (ped_w + 3)), (-h * 0.05, d / 2 + 10, side * (ped_w + 30)),
                     (4.0, 3.5, 4.0), marrow)
        # spinous process: a tall, thin plate pointing posteriorly and a little downwards
        length = anat["spinous_length"] * (0.85 if lv.name.startswith("T") else 1.0)
        _capsule(lv, grid, (h * 0.08, back_wall + 5, 0), (h * 0.22, back_wall + length, 0), (h * 0.36, 5.5, 4.5), marrow, 0.7)
        # interspinous ligament to the next spinous process
        if not levels[i + 1].sacral:
            nxt = levels[i + 1]
            p_top = lv.point(h * 0.5, back_wall + 5 + length * 0.5)
            p_bot = nxt.point(-nxt.height * 0.3, back_wall + 5 + length * 0.5)
            _tube(grid, np.array([p_top, p_bot]), np.array([4.0, 4.0]), np.array([2.5, 2.5]), LIGAMENT)

    # --- canal contents: epidural fat around the dural sac (bright CSF) with the cord inside
    grid.current_level = _CANAL_LEVEL_VALUE
    _tube(grid, bony_pts, np.full(nlev, bony_ap) * taper, np.full(nlev, lat + 1.5) * taper, EPIDURAL)
    sac_taper = np.array([1.0] * _S1 + [0.8, 0.0, 0.0])
    _tube(grid, sac_pts, np.full(nlev, ap) * sac_taper, np.full(nlev, lat) * sac_taper, CSF)
    conus = anat["conus_level"]  # level index (fractional) where the cord ends
    k = int(math.floor(conus))
    end = sac_pts[k] + (sac_pts[k + 1] - sac_pts[k]) * (conus - k)
    cord_pts = np.concatenate([sac_pts[: k + 1], [end]])
    cord_ap = np.full(len(cord_pts), ap * 0.55)
    cord_ap[-1] = 0.0
    cord_ap[-2] = ap * 0.45
    _tube(grid, cord_pts, cord_ap, cord_ap * 1.3, CORD)
    # a few cauda equina roots hanging dorsally in the sac below the conus
    off = ap * 0.4
    roots = np.array([end + levels[k].n * off] + [sac_pts[j] + levels[j].n * off for j in range(k + 1, _S1 + 1)])
    for side in (-1, 1):
        _tube_lateral(grid, roots, 1.0, side * lat * 0.3, CORD)


def _tube_lateral(grid: _Grid, points: np.ndarray, radius: float, cw: float, tissue: int) -> None:
    """A thin round tube through sagittal points, offset laterally by ``cw``."""
    for i in range(len(points) - 1):
        p0, p1 = points[i], points[i + 1]
        qmin = [min(p0[0], p1[0]) - radius, min(p0[1], p1[1]) - radius, cw - radius]
        qmax = [max(p0[0], p1[0]) + radius, max(p0[1], p1[1]) + radius, cw + radius]
        d = p1 - p0
        length2 = float(d @ d) or 1.0

        def fn(u, v, w, p0=p0, d=d, length2=length2):
            du, dv = u - np.float32(p0[0]), v - np.float32(p0[1])
            t = np.clip((du * np.float32(d[0]) + dv * np.float32(d[1])) / np.float32(length2), 0, 1)
            eu, ev = du - t * np.float32(d[0]), dv - t * np.float32(d[1])
            return [(eu * eu + ev * ev + (w - np.float32(cw)) ** 2 <= radius * radius, tissue)]

        grid.paint(qmin, qmax, fn)


# ------------------------------------------------------------------ fields

def _smooth_field(rng: np.random.Generator, shape: Tuple[int, ...], spacing: Sequence[float], scale_mm: float) -> np.ndarray:
    """Zero-mean, unit-ish smooth random field: random nodes every ``scale_mm``, smoothstep-interpolated.

    Interpolation is a dense matrix product per axis (BLAS), much faster than gathers.
    """
    coarse_shape = [int(math.ceil(n * s / scale_mm)) + 2 for n, s in zip(shape, spacing)]
    out = rng.standard_normal(coarse_shape).astype(np.float32)
    for axis, (n, s) in enumerate(zip(shape, spacing)):
        pos = np.arange(n) * (s / scale_mm) + rng.uniform(0, 1)
        i0 = np.floor(pos).astype(int)
        f = pos - i0
        f = f * f * (3 - 2 * f)
        weights = np.zeros((coarse_shape[axis], n), np.float32)
        weights[i0, np.arange(n)] = 1 - f
        weights[i0 + 1, np.arange(n)] = f
        out = np.moveaxis(np.tensordot(out, weights, axes=([axis], [0])), -1, axis)
    return np.ascontiguousarray(out)


# ------------------------------------------------------------------ public API

def _direction(orientation: Union[str, Sequence[float]]) -> np.ndarray:
    if isinstance(orientation, str):
        key = orientation.lower()
        if key not in ORIENTATIONS:
            raise InputError(f"unknown orientation {orientation!r}; use sagittal, axial, coronal or 9 direction cosines")
        return np.asarray(ORIENTATIONS[key], float).reshape(3, 3)
    values = np.asarray(list(orientation), float)
    if values.size != 9 or not np.all(np.isfinite(values)):
        raise InputError("a direction matrix needs 9 finite numbers (row-major, as SimpleITK's GetDirection)")
    d = values.reshape(3, 3)
    if not np.allclose(d.T @ d, np.eye(3), atol=1e-4):
        raise InputError("direction matrix is not orthonormal; give 9 direction cosines of three perpendicular unit axes")
    return d


def _rotation(roll: float, yaw: float) -> np.ndarray:
    """Small rotation of the anatomy frame (u, v, w): roll about v (A-P), yaw about u (S-I)."""
    cr, sr, cy, sy = math.cos(roll), math.sin(roll), math.cos(yaw), math.sin(yaw)
    r_roll = np.array([[cr, 0, -sr], [0, 1, 0], [sr, 0, cr]])  # mixes u and w
    r_yaw = np.array([[1, 0, 0], [0, cy, -sy], [0, sy, cy]])  # mixes v and w
    return r_roll @ r_yaw


def make_phantom(
    *,
    size: Sequence[int] = (880, 880, 12),
    spacing: Sequence[float] = (0.345, 0.345, 4.4),
    seed: int = 0,
    orientation: Union[str, Sequence[float]] = "sagittal",
    binary: bool = False,
    bias: bool = True,
    noise: float = 0.04,
    supersample: int = 3,
    levels: bool = False,
) -> Phantom:
    """Generate a lumbar spine T2 phantom and its label map.

    ``size`` and ``spacing`` are SimpleITK (x, y, z); thick slices (partial volume from
    ``supersample`` sub-slices) are along the axis with the largest spacing. ``orientation``
    is "sagittal" (x anterior->posterior, y superior->inferior, z right->left), "axial",
    "coronal" (the same anatomy sliced along another axis) or 9 direction cosines.
    ``noise`` is the Rician noise sigma relative to CSF intensity (1000); ``bias`` adds
    a smooth multiplicative coil field. Labels are SPINE_CLASSES values (1 vertebra,
    2 disc, 3 spinal canal incl. the cord) or 0/1 when ``binary``. The same arguments
    always give the same volume. ``levels`` also paints the per-level ground truth
    (:attr:`Phantom.levels`); it does not change the image or the label.
    """
    size_t = tuple(int(s) for s in size)
    spacing_t = tuple(float(s) for s in spacing)
    if len(size_t) != 3 or min(size_t) < 1:
        raise InputError(f"phantom size must be three positive integers (x y z), got {tuple(size)}")
    if len(spacing_t) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing_t):
        raise InputError(f"phantom spacing must be three positive numbers in mm (x y z), got {tuple(spacing)}")
    if not (math.isfinite(noise) and noise >= 0):
        raise InputError(f"noise must be a non-negative number, got {noise}")
    if int(supersample) < 1:
        raise InputError(f"supersample must be >= 1, got {supersample}")
    direction = _direction(orientation)

    rng = np.random.default_rng(int(seed))
    anat = _draw_anatomy(rng)
    rot = _rotation(*anat["tilt"])
    lps_to_uvw = np.array([[0.0, 0, -1], [0, 1, 0], [1, 0, 0]])  # u = -z, v = y, w = x
    M = rot @ lps_to_uvw  # anatomy = M @ LPS
    # field of view centred a little below L3 and just posterior to the bodies
    fov_center = M.T @ anat["fov_offset"]
    extent = direction @ (np.asarray(spacing_t) * (np.asarray(size_t) - 1) / 2)
    origin = fov_center - extent
    A = M @ direction @ np.diag(spacing_t)
    b = M @ origin

    ss_axis = int(np.argmax(np.asarray(spacing_t) * (1 + 1e-9 * np.arange(3))))  # ties -> z
    ss = int(supersample)
    grid = _Grid(size_t, A, b, ss_axis, ss, lps_to_uvw @ direction @ np.diag(spacing_t), lps_to_uvw @ origin)
    if levels:
        grid.level = np.zeros(grid.shape, np.uint8)
    _paint_anatomy(grid, anat)

    # tissues -> intensity (sub-slice mean) and label (sub-slice majority, ties to the centre)
    intensity = np.zeros(N_TISSUES, np.float32)
    texture = np.zeros(N_TISSUES, np.float32)
    for t, value in _BASE_INTENSITY.items():
        intensity[t], texture[t] = value, _TEXTURE[t]
    n_levels = len(LEVEL_NAMES)
    intensity[MARROW0:MARROW0 + n_levels] = 430.0 * anat["marrow"]
    texture[MARROW0:MARROW0 + n_levels] = 0.18
    intensity[NUCLEUS0:NUCLEUS0 + n_levels - 1] = 780.0 - 560.0 * anat["degeneration"]
    texture[NUCLEUS0:NUCLEUS0 + n_levels - 1] = 0.08
    labels_lut = _label_lut()

    np_axis = 2 - ss_axis
    out_shape = tuple(size_t[::-1])
    tissue = grid.tissue
    base = np.zeros(out_shape, np.float32)
    amp = np.zeros(out_shape, np.float32)
    sub_labels = []
    sub_levels = []
    for m in range(ss):
        index: List[Any] = [slice(None)] * 3
        index[np_axis] = slice(m, None, ss)
        sub = tissue[tuple(index)]
        base += intensity[sub]
        amp += texture[sub]
        sub_labels.append(labels_lut[sub])
        if grid.level is not None:
            sub_levels.append(grid.level[tuple(index)])
    if ss == 1:
        label = sub_labels[0]
    elif ss == 3:  # majority of three; all different -> the centre
        label = np.where(sub_labels[0] == sub_labels[2], sub_labels[0], sub_labels[1])
    else:  # majority, ties to the centre sub-slice
        votes = np.zeros((4,) + out_shape, np.uint16)
        for m, lab in enumerate(sub_labels):
            for c in range(4):
                votes[c] += (lab == c).astype(np.uint16) * np.uint16(3 if m == ss // 2 else 2)
        label = np.argmax(votes, axis=0).astype(np.uint8)
    level_label = None
    if sub_levels:  # per sub-slice level values, the centre one first where its class is the voxel's class
        level_label = np.zeros(out_shape, np.uint8)
        order = [m for m in range(ss) if m != ss // 2] + [ss // 2]
        for m in order:
            level_label = np.where(sub_labels[m] == label, sub_levels[m], level_label)
    del tissue, grid
    if binary:  # the union of the classes, so binary and multi-class maps of a seed agree
        label = (label > 0).astype(np.uint8)
    base /= ss
    amp /= ss

    spacing_zyx = spacing_t[::-1]
    tex = 0.75 * _smooth_field(rng, out_shape, spacing_zyx, 6.0) + 0.5 * _smooth_field(rng, out_shape, spacing_zyx, 1.6)
    image = base * (1 + amp * tex)
    if bias:
        # coil sensitivity falling off anteriorly from a posterior (spine) coil, times a slow random field
        v = np.float32(b[1])
        for axis in range(3):
            shape = [1, 1, 1]
            shape[2 - axis] = -1
            v = v + (A[1, axis] * np.arange(size_t[axis])).astype(np.float32).reshape(shape)
        coil = np.exp(-np.maximum(np.float32(80.0) - v, 0) / np.float32(260.0))
        slow = _smooth_field(rng, out_shape, spacing_zyx, 90.0)
        image = image * (coil * np.exp(np.float32(0.15) * slow)) * np.float32(1.3)
    if noise > 0:
        sigma = np.float32(noise * 1000.0)
        real = image + sigma * rng.standard_normal(out_shape, dtype=np.float32)
        imag = sigma * rng.standard_normal(out_shape, dtype=np.float32)
        image = np.sqrt(real * real + imag * imag)
    image = np.maximum(image, 0).astype(np.float32)

    def to_image(array: np.ndarray) -> sitk.Image:
        img = sitk.GetImageFromArray(np.ascontiguousarray(array))
        img.SetSpacing(spacing_t)
        img.SetOrigin(tuple(float(o) for o in origin))
        img.SetDirection(tuple(float(x) for x in direction.ravel()))
        return img

    params = {
        "seed": int(seed),
        "orientation": orientation if isinstance(orientation, str) else [float(x) for x in direction.ravel()],
        "binary": bool(binary),
        "levels": [
            {"name": lv.name, "center_lps": [float(x) for x in M.T @ np.array([lv.center[0], lv.center[1], 0.0])],
             "tilt_deg": math.degrees(lv.angle), "height_mm": lv.height, "depth_mm": lv.depth, "width_mm": lv.width}
            for lv in anat["levels"]
        ],
        "disc_degeneration": [float(x) for x in anat["degeneration"]],
    }
    return Phantom(image=to_image(image), label=to_image(label), params=params,
                   levels=None if level_label is None else to_image(level_label))
