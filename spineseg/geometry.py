"""The canonical frame: map any 3D volume to the network's array layout and back, exactly.

The network sees arrays laid out (D, H, W) with D the through-plane (slice)
axis, H the in-plane axis closest to superior->inferior and W the other in-plane
axis (anterior->posterior for a sagittal scan). The mapping is a permutation and
flips of voxel axes only, never a resampling, so ``from_canonical`` restores the
input's voxels and geometry bit for bit, for any orientation, oblique included.

Physical directions follow ITK's LPS convention: +x left, +y posterior, +z superior.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

#: A volume whose largest spacing is less than this times the next largest is
#: "near-isotropic": the slice axis is a guess and the user is warned.
ANISOTROPY_WARNING_RATIO = 1.5
_TIE_TOLERANCE = 1e-3


def direction_matrix(image: sitk.Image) -> np.ndarray:
    """3x3 direction matrix; column i is the physical direction of image axis i (x, y, z)."""
    return direction_matrix_from(image.GetDirection())


def orientation_code(image: sitk.Image) -> str:
    """Three-letter orientation code as ITK's DICOMOrientImageFilter defines it (identity is ``LPS``)."""
    return sitk.DICOMOrientImageFilter_GetOrientationFromDirectionCosines(image.GetDirection())


def slice_axis(image: sitk.Image, *, warn: bool = True) -> int:
    """The image axis (0=x, 1=y, 2=z, SimpleITK order) along which slices are stacked.

    The axis with the largest spacing; among axes within 0.1% of it, the one most
    aligned with left-right (sagittal stacks), then the highest index. Warns when the
    volume is near-isotropic, since then the choice is only a guess.
    """
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    d = direction_matrix(image)
    largest = spacing.max()
    candidates = [i for i in range(3) if spacing[i] >= largest * (1 - _TIE_TOLERANCE)]
    axis = max(candidates, key=lambda i: (round(abs(d[0, i]), 6), i))
    note = near_isotropic_warning(image, axis) if warn else None
    if note:
        warnings.warn(note, stacklevel=2)
    return axis


def near_isotropic_warning(image: sitk.Image, axis: int) -> Optional[str]:
    """The warning for a volume whose slice ``axis`` is only a guess (near-isotropic), else None."""
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    others = sorted(spacing[i] for i in range(3) if i != axis)
    if spacing[axis] >= ANISOTROPY_WARNING_RATIO * others[-1] * (1 - 1e-6):  # 0.9 vs 0.6 mm is not 'near'
        return None
    return (f"volume is near-isotropic (spacing {tuple(round(float(s), 3) for s in spacing)} mm); "
            f"assuming slices along image axis {'xyz'[axis]}. SpineSeg is built for thick-slice scans.")


@dataclass(frozen=True)
class CanonicalFrame:
    """How one volume maps to the canonical (D, H, W) array and back.

    ``axes`` are the image axes (0=x, 1=y, 2=z) that become D, H, W; ``flips``
    says which canonical axes are reversed. The original geometry is kept so the
    output can be written with the input's exact size, spacing, origin and direction.
    """

    size: Tuple[int, int, int]
    spacing: Tuple[float, float, float]
    origin: Tuple[float, float, float]
    direction: Tuple[float, ...]
    axes: Tuple[int, int, int]
    flips: Tuple[bool, bool, bool]

    @classmethod
    def of(cls, image: sitk.Image, *, warn: bool = True) -> "CanonicalFrame":
        d = direction_matrix(image)
        s = slice_axis(image, warn=warn)
        a, b = [i for i in (2, 1, 0) if i != s]  # default: higher index first (y before x), as in SimpleITK arrays
        # H is the in-plane axis more aligned with superior-inferior, then with anterior-posterior (an
        # axial stack has no superior-inferior in-plane axis); only an exact tie keeps the default order.
        # Components are compared rounded, so direction cosines a rounding step off change nothing.
        key_a = (round(abs(d[2, a]), 6), round(abs(d[1, a]), 6))
        key_b = (round(abs(d[2, b]), 6), round(abs(d[1, b]), 6))
        h, w = (b, a) if key_b > key_a else (a, b)
        flips = (_reversed(d[:, s], (0, 1, 2), (1, 1, 1)),  # D: right -> left
                 _reversed(d[:, h], (2, 1, 0), (-1, 1, 1)),  # H: superior -> inferior
                 _reversed(d[:, w], (1, 0, 2), (1, 1, 1)))  # W: anterior -> posterior
        return cls(
            size=tuple(int(v) for v in image.GetSize()),
            spacing=tuple(float(v) for v in image.GetSpacing()),
            origin=tuple(float(v) for v in image.GetOrigin()),
            direction=tuple(float(v) for v in image.GetDirection()),
            axes=(s, h, w),
            flips=flips,
        )

    # numpy arrays from SimpleITK are (z, y, x): image axis i is numpy axis 2 - i
    @property
    def _perm(self) -> Tuple[int, int, int]:
        return tuple(2 - a for a in self.axes)

    @property
    def shape(self) -> Tuple[int, int, int]:
        """Canonical (D, H, W) shape."""
        return tuple(self.size[a] for a in self.axes)

    @property
    def canonical_spacing(self) -> Tuple[float, float, float]:
        """Spacing in mm along D, H, W."""
        return tuple(self.spacing[a] for a in self.axes)

    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        """(z, y, x) array of the input -> (D, H, W); extra leading axes (channels) are kept."""
        lead = array.ndim - 3
        out = np.transpose(array, tuple(range(lead)) + tuple(lead + p for p in self._perm))
        flip_axes = tuple(lead + i for i, f in enumerate(self.flips) if f)
        return np.flip(out, flip_axes) if flip_axes else out

    def from_canonical(self, array: np.ndarray) -> np.ndarray:
        """(D, H, W) array -> the input's (z, y, x) layout; extra leading axes are kept."""
        lead = array.ndim - 3
        if tuple(array.shape[lead:]) != self.shape:
            raise ValueError(f"canonical array has shape {array.shape[lead:]}, expected {self.shape}")
        flip_axes = tuple(lead + i for i, f in enumerate(self.flips) if f)
        out = np.flip(array, flip_axes) if flip_axes else array
        inverse = tuple(int(i) for i in np.argsort(self._perm))
        return np.transpose(out, tuple(range(lead)) + tuple(lead + p for p in inverse))

    def physical_point(self, index: Sequence[float]) -> Tuple[float, float, float]:
        """Physical (LPS, mm) position of a continuous canonical (D, H, W) index."""
        image_index = np.zeros(3)
        for i, axis in enumerate(self.axes):
            v = float(index[i])
            image_index[axis] = self.size[axis] - 1 - v if self.flips[i] else v
        d = direction_matrix_from(self.direction)
        p = np.asarray(self.origin) + d @ (image_index * np.asarray(self.spacing))
        return (float(p[0]), float(p[1]), float(p[2]))

    def image_from_canonical(self, array: np.ndarray) -> sitk.Image:
        """A SimpleITK image with the input's exact geometry from a canonical (D, H, W) array."""
        image = sitk.GetImageFromArray(np.ascontiguousarray(self.from_canonical(array)))
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def canonical_image(self, array: np.ndarray) -> sitk.Image:
        """A SimpleITK image of a canonical array, with the physical geometry that array really has.

        Useful to look at or save what the network sees; its voxels sit where the input's do.
        """
        d = direction_matrix_from(self.direction)
        # physical direction of canonical axes W (x), H (y), D (z) of the new image
        cols = []
        for i, axis in zip((2, 1, 0), (self.axes[2], self.axes[1], self.axes[0])):
            cols.append(-d[:, axis] if self.flips[i] else d[:, axis])
        new_dir = np.stack(cols, axis=1)
        index0 = [0, 0, 0]
        for i, axis in enumerate(self.axes):
            index0[axis] = self.size[axis] - 1 if self.flips[i] else 0
        origin = np.asarray(self.origin) + d @ (np.asarray(index0) * np.asarray(self.spacing))
        image = sitk.GetImageFromArray(np.ascontiguousarray(array))
        image.SetSpacing(tuple(self.canonical_spacing[::-1]))
        image.SetOrigin(tuple(float(v) for v in origin))
        image.SetDirection(tuple(float(v) for v in new_dir.ravel()))
        return image


def _reversed(column: np.ndarray, components: Tuple[int, int, int], signs: Tuple[int, int, int]) -> bool:
    """Whether an axis runs against its canonical sense: judged on the first of ``components`` it really has.

    A component below 1e-6 counts as absent (an axial stack's in-plane axes have no superior-inferior
    part; a reader's rounding can leave 1e-17 there), so noise never decides a flip.
    """
    for c, sign in zip(components, signs):
        value = round(float(column[c]), 6)
        if value != 0.0:
            return bool(value * sign < 0)
    return False


def direction_matrix_from(direction: Tuple[float, ...]) -> np.ndarray:
    return np.asarray(direction, dtype=float).reshape(3, 3)


#: in-plane spacing within this fraction of the model's is used as it is (no resampling)
RESAMPLE_TOLERANCE = 0.1


def inplane_target_shape(shape: Tuple[int, int, int], spacing: Tuple[float, float, float],
                         model_spacing: Tuple[float, float, float]) -> Optional[Tuple[int, int, int]]:
    """The (D, H, W) shape at the model's in-plane spacing, or None when the input is close enough.

    Like nnU-Net, the network sees voxels of the size it was trained on; the slice axis is
    left alone (thick slices are what the model is for; resampling them would invent data).
    """
    ratios = [spacing[i] / model_spacing[i] for i in (1, 2)]
    if all(abs(r - 1.0) <= RESAMPLE_TOLERANCE for r in ratios):
        return None
    return (shape[0],) + tuple(max(1, int(round(shape[i] * ratios[i - 1]))) for i in (1, 2))  # type: ignore[return-value]


def resample_inplane(array: np.ndarray, shape: Tuple[int, int, int], *, labels: bool = False) -> np.ndarray:
    """Resample a (D, H, W) or (K, D, H, W) array in-plane to ``shape`` (D unchanged).

    Linear for images and probabilities; ``labels=True``: nearest neighbour, dtype kept.
    Voxel centres are placed so both grids cover the same extent (as SimpleITK's
    physical-space resampling with matching field of view does).
    """
    if array.ndim == 4:
        return np.stack([resample_inplane(channel, shape, labels=labels) for channel in array])
    d, h, w = array.shape
    src = sitk.GetImageFromArray(np.ascontiguousarray(array if labels else array.astype(np.float32, copy=False)))
    out_spacing = (w / shape[2], h / shape[1], 1.0)
    origin = (0.5 * (out_spacing[0] - 1.0), 0.5 * (out_spacing[1] - 1.0), 0.0)
    interpolator = sitk.sitkNearestNeighbor if labels else sitk.sitkLinear
    out = sitk.Resample(src, (shape[2], shape[1], d), sitk.Transform(), interpolator, origin, out_spacing,
                        src.GetDirection(), 0.0, src.GetPixelID() if labels else sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)
