"""The same anatomy stored in any voxel order, or with 1-ulp direction noise, gets the same labels.

Slicer re-indexes some files on load (a left-handed NIfTI comes back with its axes flipped) and
writes direction cosines a rounding step off; the CLI reads the file as stored. Both must give the
same label for every physical voxel, so preprocessing (N4 fit, Otsu mask) works on the canonical
array in index space, where none of this is visible.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence, Tuple

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spineseg.inference import InferenceOptions, segment_image
from spineseg.phantom import make_phantom

TINY = Path(__file__).resolve().parent / "data" / "inference-tiny-model"

MapBack = Callable[[np.ndarray], np.ndarray]


@pytest.fixture(scope="module")
def anatomy() -> sitk.Image:
    """A small oblique sagittal phantom: odd sizes, so shrink blocks never line up by accident."""
    phantom = make_phantom(size=(61, 67, 11), spacing=(2.1, 2.1, 4.4), seed=3, supersample=1)
    image = phantom.image
    d = np.asarray(image.GetDirection()).reshape(3, 3)
    c, s = np.cos(0.2), np.sin(0.2)
    tilt = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    image.SetDirection(tuple((tilt @ d).ravel()))
    return image


def flipped(image: sitk.Image, axis: int) -> Tuple[sitk.Image, MapBack]:
    """The same voxels stored with image axis ``axis`` (0=x) reversed; the physical grid is unchanged."""
    array = sitk.GetArrayFromImage(image)
    out = sitk.GetImageFromArray(np.ascontiguousarray(np.flip(array, 2 - axis)))
    last = [0, 0, 0]
    last[axis] = image.GetSize()[axis] - 1
    d = np.asarray(image.GetDirection()).reshape(3, 3).copy()
    d[:, axis] *= -1
    out.SetSpacing(image.GetSpacing())
    out.SetOrigin(image.TransformIndexToPhysicalPoint(last))
    out.SetDirection(tuple(d.ravel()))
    return out, lambda labels: np.flip(labels, 2 - axis)


def permuted(image: sitk.Image, order: Sequence[int]) -> Tuple[sitk.Image, MapBack]:
    """The same voxels with image axes reordered (output axis i is input axis ``order[i]``)."""
    out = sitk.PermuteAxes(image, [int(i) for i in order])
    numpy_order = [2 - int(order[2 - k]) for k in range(3)]  # output numpy axis k is input numpy axis numpy_order[k]
    inverse = tuple(int(i) for i in np.argsort(numpy_order))
    return out, lambda labels: np.transpose(labels, inverse)


def ulp_noise(image: sitk.Image) -> sitk.Image:
    """Direction cosines one rounding step off (1.0 -> 0.9999999999999999), as a reader may give them."""
    out = sitk.Image(image)
    out.SetDirection(tuple(float(np.nextafter(v, 0.0)) if v != 0 else v for v in image.GetDirection()))
    return out


def labels_of(image: sitk.Image, n4: bool) -> np.ndarray:
    result = segment_image(image, TINY, options=InferenceOptions(device="cpu", n4=n4, n4_shrink=4))
    return sitk.GetArrayFromImage(result.label)


@pytest.fixture(scope="module")
def reference(anatomy):
    return {n4: labels_of(anatomy, n4) for n4 in (False, True)}


@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.permutations([0, 1, 2]), flips=st.tuples(st.booleans(), st.booleans(), st.booleans()),
       noise=st.booleans(), n4=st.booleans())
def test_same_labels_for_any_storage_order_and_ulp_noise(anatomy, reference, order, flips, noise, n4):
    image, back = anatomy, []
    for axis, flip in enumerate(flips):
        if flip:
            image, undo = flipped(image, axis)
            back.append(undo)
    image, undo = permuted(image, order)
    back.append(undo)
    if noise:
        image = ulp_noise(image)
    labels = labels_of(image, n4)
    for undo in reversed(back):
        labels = undo(labels)
    expected = reference[n4]
    assert expected.any()
    changed = int((labels != expected).sum())
    assert changed == 0, f"{changed} voxels changed label (order {order}, flips {flips}, ulp noise {noise}, n4 {n4})"


def test_storage_helpers_keep_the_physical_grid(anatomy):
    """The test's own transforms move no voxel: every stored voxel keeps its physical position."""
    image, undo = permuted(flipped(anatomy, 1)[0], (2, 0, 1))
    index = np.stack(np.meshgrid(*[np.arange(n) for n in image.GetSize()], indexing="ij"), -1).reshape(-1, 3)
    points = [image.TransformIndexToPhysicalPoint([int(v) for v in i]) for i in index[::97]]
    back = [anatomy.TransformPhysicalPointToIndex(p) for p in points]
    values = sitk.GetArrayViewFromImage(image)
    for i, j in zip(index[::97], back):
        assert values[i[2], i[1], i[0]] == sitk.GetArrayViewFromImage(anatomy)[j[2], j[1], j[0]]
    np.testing.assert_array_equal(np.flip(undo(sitk.GetArrayFromImage(image)), 1), sitk.GetArrayFromImage(anatomy))


ORIENTATIONS = {
    "sagittal": (0, 0, -1, 1, 0, 0, 0, -1, 0),
    "axial": (1, 0, 0, 0, 1, 0, 0, 0, 1),
    "coronal": (1, 0, 0, 0, 0, 1, 0, -1, 0),
}


@settings(max_examples=60, deadline=None, derandomize=True)
@given(orientation=st.sampled_from(sorted(ORIENTATIONS)), tilt=st.sampled_from([0.0, 0.2, -0.35]),
       order=st.permutations([0, 1, 2]), flips=st.tuples(st.booleans(), st.booleans(), st.booleans()),
       noise=st.booleans())
def test_canonical_array_ignores_storage(orientation, tilt, order, flips, noise):
    """Axial, coronal and sagittal stacks, tilted or not: one canonical array and spacing for every storage."""
    from spineseg.geometry import CanonicalFrame

    rng = np.random.default_rng(0)
    base = sitk.GetImageFromArray(rng.random((5, 7, 9)).astype(np.float32))
    base.SetSpacing((0.7, 0.8, 4.4))
    c, s = np.cos(tilt), np.sin(tilt)
    d = np.array([[1, 0, 0], [0, c, -s], [0, s, c]]) @ np.asarray(ORIENTATIONS[orientation], float).reshape(3, 3)
    base.SetDirection(tuple(d.ravel()))
    image = base
    for axis, flip in enumerate(flips):
        if flip:
            image = flipped(image, axis)[0]
    image = permuted(image, order)[0]
    if noise:
        image = ulp_noise(image)
    want, got = CanonicalFrame.of(base), CanonicalFrame.of(image)
    assert got.canonical_spacing == want.canonical_spacing
    np.testing.assert_array_equal(got.to_canonical(sitk.GetArrayViewFromImage(image)),
                                  want.to_canonical(sitk.GetArrayViewFromImage(base)))
