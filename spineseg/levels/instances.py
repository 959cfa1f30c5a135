"""Split the vertebra and disc classes into instances, in 3D.

Neighbouring vertebrae touch through their facet joints (and, where a disc is missed,
through the disc space), so the vertebra class's connected components merge. The split
uses anatomy instead:

1. the *body region* is everything anterior to the spinal canal (per canonical row, the
   canal's most anterior point), which cuts the posterior elements away;
2. *body cores* are the connected components of the body region after an in-plane
   erosion: discs and endplate gaps separate them even where the labels touch thinly; a
   core much taller than its neighbours (two bodies joined by a missed disc) is eroded
   further until it splits;
3. every vertebra voxel joined to a core goes to the core it is reached from first by a
   watershed on the distance map (floods meet at the narrow facet contacts); vertebra
   pieces joined to no core (a spinous process cut off in these slices) go to the
   vertebra whose voxels are nearest.

Discs are the connected components of the disc class; pieces of one disc are merged
later by position along the curve (:mod:`spineseg.levels.naming`).

All arrays are canonical (D, H, W); sizes are in mm through ``spacing``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

#: in-plane erosion that separates body cores (mm)
CORE_EROSION_MM = 1.5
#: further erosions tried on a core that looks like two bodies (mm)
SPLIT_EROSIONS_MM = (2.5, 3.5, 5.0, 7.0)
#: a core this much taller (along the curve) than the median core is tried for a split
MERGED_HEIGHT_RATIO = 1.6
#: components smaller than this fraction of the median of the largest few are fragments
_FRAGMENT_FRACTION = 0.12
_MIN_CORE_MM3 = 300.0
MIN_DISC_MM3 = 40.0


def _image(array: np.ndarray, spacing: Sequence[float]) -> sitk.Image:
    img = sitk.GetImageFromArray(np.ascontiguousarray(array))
    img.SetSpacing(tuple(float(s) for s in spacing[::-1]))  # canonical (D, H, W) -> sitk (x=W, y=H, z=D)
    return img


def components(mask: np.ndarray, spacing: Sequence[float], *, full: bool = False) -> Tuple[np.ndarray, int]:
    """(labels 1..n by decreasing size, n) of a boolean mask; face-connected unless ``full``."""
    if not mask.any():
        return np.zeros(mask.shape, np.int32), 0
    cc = sitk.ConnectedComponent(_image(mask.astype(np.uint8), spacing), full)
    cc = sitk.RelabelComponent(cc, sortByObjectSize=True)
    arr = sitk.GetArrayFromImage(cc).astype(np.int32)
    return arr, int(arr.max())


def erode_inplane(mask: np.ndarray, spacing: Sequence[float], radius_mm: float) -> np.ndarray:
    """Binary erosion by a disc of ``radius_mm`` in each slice (none across slices)."""
    rh = int(round(radius_mm / spacing[1]))
    rw = int(round(radius_mm / spacing[2]))
    if rh < 1 and rw < 1:
        return mask.copy()
    out = sitk.BinaryErode(_image(mask.astype(np.uint8), spacing), [max(rw, 0), max(rh, 0), 0], sitk.sitkBall, 0, 1)
    return sitk.GetArrayFromImage(out).astype(bool)


def canal_front(canal: np.ndarray, spacing: Sequence[float]) -> Optional[np.ndarray]:
    """Per canonical row H, the most anterior W position (mm) of the canal; None without a canal.

    Rows the canal does not reach take the value of the nearest row it does.
    """
    rows = np.where(canal.any(axis=(0, 2)))[0]
    if rows.size == 0:
        return None
    w_idx = np.where(canal.any(axis=0), np.arange(canal.shape[2])[None, :], canal.shape[2])  # (H, W)
    front = w_idx.min(axis=1).astype(np.float64)
    h = np.arange(canal.shape[1])
    front = np.interp(h, rows, front[rows])
    # smooth over ~5 mm of rows so that a notch in the canal label does not bite into a body
    k = max(1, int(round(5.0 / spacing[1])))
    if k > 1:
        pad = np.pad(front, (k, k), mode="edge")
        front = np.convolve(pad, np.ones(2 * k + 1) / (2 * k + 1), mode="same")[k:-k]
    return front * spacing[2]


def anterior_region(shape: Tuple[int, int, int], spacing: Sequence[float], front_mm: Optional[np.ndarray]) -> np.ndarray:
    """Boolean (1, H, W) mask of positions anterior to the canal (everything when there is no canal)."""
    if front_mm is None:
        return np.ones((1,) + tuple(shape[1:]), bool)
    w_mm = np.arange(shape[2]) * spacing[2]
    return (w_mm[None, :] < front_mm[:, None])[None]


@dataclass
class Core:
    """A vertebral body core: its voxels (boolean mask over the crop) and centre in canonical mm."""

    mask: np.ndarray
    centre_mm: np.ndarray
    volume_mm3: float


def _cores_from(mask: np.ndarray, spacing: Sequence[float], radius_mm: float, min_mm3: float) -> List[Core]:
    voxel = float(np.prod(spacing))
    eroded = erode_inplane(mask, spacing, radius_mm)
    lab, n = components(eroded, spacing)
    if n == 0:
        return []
    counts = np.bincount(lab.ravel(), minlength=n + 1)[1:] * voxel
    big = np.sort(counts)[::-1][:5]
    threshold = max(min_mm3, _FRAGMENT_FRACTION * float(np.median(big)))
    cores = []
    for i in range(n):
        if counts[i] < threshold:
            continue
        m = lab == i + 1
        idx = np.argwhere(m)
        cores.append(Core(m, idx.mean(axis=0) * np.asarray(spacing), float(counts[i])))
    return cores


def body_cores(vertebra: np.ndarray, anterior: np.ndarray, spacing: Sequence[float]) -> List[Core]:
    """Body cores of the vertebra class (see the module docstring), unordered."""
    body = vertebra & anterior
    return _cores_from(body, spacing, CORE_EROSION_MM, _MIN_CORE_MM3)


def split_core(core: Core, spacing: Sequence[float]) -> Optional[List[Core]]:
    """Two or more cores from one that joins several bodies, or None when erosion does not split it."""
    for radius in SPLIT_EROSIONS_MM:
        parts = _cores_from(core.mask, spacing, radius, _MIN_CORE_MM3)
        if len(parts) >= 2:
            total = sum(p.volume_mm3 for p in parts)
            if min(p.volume_mm3 for p in parts) >= 0.15 * total:
                return parts
    return None


def watershed_assign(vertebra: np.ndarray, markers: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Core index (1..K) for every vertebra voxel connected to a marker; 0 elsewhere.

    A marker watershed on the inverted distance map: each core floods its own body,
    pedicles and arch before the narrow contacts (facets) where neighbours meet.
    """
    if not markers.any():
        return np.zeros(vertebra.shape, np.int32)
    img = _image(vertebra.astype(np.uint8), spacing)
    dist = sitk.SignedMaurerDistanceMap(img, insideIsPositive=True, squaredDistance=False, useImageSpacing=True)
    d = sitk.GetArrayFromImage(dist).astype(np.float32)
    height = np.where(vertebra, -d, np.float32(d.max() + 1.0)).astype(np.float32)
    ws = sitk.MorphologicalWatershedFromMarkers(_image(height, spacing), _image(markers.astype(np.uint32), spacing),
                                                markWatershedLine=False, fullyConnected=False)
    out = sitk.GetArrayFromImage(ws).astype(np.int32)
    # keep only voxels whose vertebra component holds a marker (others are assigned along the curve)
    lab, n = components(vertebra, spacing, full=True)
    with_marker = np.zeros(n + 1, bool)
    with_marker[np.unique(lab[markers > 0])] = True
    with_marker[0] = False
    out[~with_marker[lab]] = 0
    return out


def nearest_owner(owner: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """For every voxel, the owner label of the nearest labelled voxel (a Voronoi map, in mm)."""
    f = sitk.DanielssonDistanceMapImageFilter()
    f.SetUseImageSpacing(True)
    f.SetInputIsBinary(False)
    f.Execute(_image(owner.astype(np.uint32), spacing))
    return sitk.GetArrayFromImage(f.GetVoronoiMap()).astype(np.int32)


def disc_pieces(disc: np.ndarray, spacing: Sequence[float]) -> List[np.ndarray]:
    """Boolean masks of the disc class's connected components, largest first (specks included)."""
    lab, n = components(disc, spacing, full=True)
    return [lab == i + 1 for i in range(n)]
