"""Per-level read-out on phantoms with per-level ground truth: names, counts, anchors, orientations."""
from __future__ import annotations

from typing import Dict

import numpy as np
import pytest
import SimpleITK as sitk

from spineseg.geometry import CanonicalFrame
from spineseg.levels import levels_image, name_of_value, read_levels
from spineseg.levels.convention import CANAL_VALUE, SACRUM_VALUE, disc_value, vertebra_value
from spineseg.phantom import make_phantom

SMALL = dict(size=(440, 440, 12), spacing=(0.69, 0.69, 4.4), levels=True)


def _phantom(seed: int, **kw):
    return make_phantom(seed=seed, **{**SMALL, **kw})


@pytest.fixture(scope="module")
def phantoms():
    return {seed: _phantom(seed) for seed in (0, 2)}


def _gt_names(levels: sitk.Image, min_fraction: float = 0.25) -> Dict[str, int]:
    """GT structure names -> voxels, leaving out vertebrae cut to a sliver by the field of view."""
    arr = sitk.GetArrayViewFromImage(levels)
    values, counts = np.unique(arr[arr > 0], return_counts=True)
    vert = [c for v, c in zip(values, counts) if v < 100]
    keep = {}
    for v, c in zip(values, counts):
        if v < 100 and c < min_fraction * float(np.median(vert)):
            continue
        keep[name_of_value(int(v))] = int(c)
    return keep


def _agreement(result, reference: sitk.Image, truth: sitk.Image, value: int) -> float:
    """Dice of one per-level value between the read-out and the ground truth."""
    mine = sitk.GetArrayViewFromImage(levels_image(result, reference)) == value
    gt = sitk.GetArrayViewFromImage(truth) == value
    return 2.0 * float((mine & gt).sum()) / max(1, int(mine.sum() + gt.sum()))


def test_phantom_levels_have_the_label_voxels():
    ph = _phantom(5)
    lab = sitk.GetArrayFromImage(ph.label)
    lev = sitk.GetArrayFromImage(ph.levels)
    lut = np.zeros(256, np.uint8)
    for v in range(1, 256):
        kind = {None: 0, "vertebra": 1, "disc": 2, "canal": 3}[
            "canal" if v == CANAL_VALUE else ("vertebra" if name_of_value(v) and v < 100 else
                                              ("disc" if name_of_value(v) else None))]
        lut[v] = kind
    assert np.array_equal(lut[lev], lab)
    names = {name_of_value(int(v)) for v in np.unique(lev) if v}
    assert {"L1", "L5", "S1", "L4-L5", "L5-S1", "spinal canal"} <= names
    assert np.array_equal(sitk.GetArrayFromImage(make_phantom(seed=5, **{**SMALL, "levels": False}).label), lab)


@pytest.mark.parametrize("seed", [0, 2])
def test_names_counts_and_voxels_match_the_phantom(phantoms, seed):
    ph = phantoms[seed]
    result = read_levels(ph.label)
    assert result.anchor == "sacrum"
    assert result.levels_reliable, result.levels_reasons
    gt = _gt_names(ph.levels)
    assert set(gt) <= set(result.names()), set(gt) - set(result.names())
    assert len(result.names("disc")) == sum(1 for n in gt if "-" in n)
    for name in gt:
        s = result.structure(name)
        value = CANAL_VALUE if name == "spinal canal" else (
            disc_value(name.split("-")[0]) if "-" in name else vertebra_value(name))
        assert s.label == value
        dice = _agreement(result, ph.label, ph.levels, value)
        assert dice >= (0.95 if s.kind != "vertebra" else 0.75), (name, dice)  # vertebrae: posterior elements


def test_names_do_not_depend_on_voxel_order(phantoms):
    ph = phantoms[0]
    moved = sitk.Flip(sitk.PermuteAxes(ph.label, [2, 0, 1]), [True, False, True])
    a, b = read_levels(ph.label), read_levels(moved)
    assert a.names() == b.names()
    for sa, sb in zip(a.structures, b.structures):
        assert np.allclose(sa.centroid_mm, sb.centroid_mm, atol=1e-6)
    back = sitk.Resample(levels_image(b, moved), ph.label, sitk.Transform(), sitk.sitkNearestNeighbor)
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(levels_image(a, ph.label)))


def _rotated_sagittal(deg: float):
    """Sagittal direction cosines rotated in-plane (about left-right) by ``deg``."""
    d = np.array([[0.0, 0, 1], [1, 0, 0], [0, -1, 0]])
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])  # about LPS x (left-right)
    return tuple((rot @ d).ravel())


@pytest.mark.parametrize("deg", [-25.0, 30.0])
def test_names_on_an_oblique_field_of_view(deg):
    ph = _phantom(3, orientation=_rotated_sagittal(deg))
    result = read_levels(ph.label)
    assert result.anchor == "sacrum" and result.levels_reliable, result.levels_reasons
    gt = _gt_names(ph.levels)
    assert set(gt) <= set(result.names())
    for name in ("L4-L5", "L5-S1", "L1-L2"):
        assert _agreement(result, ph.label, ph.levels, disc_value(name.split("-")[0])) >= 0.95


def _canonical(img: sitk.Image) -> np.ndarray:
    return CanonicalFrame.of(img, warn=False).to_canonical(sitk.GetArrayFromImage(img))


def _with(label: sitk.Image, array: np.ndarray) -> sitk.Image:
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(label)
    return out


def test_sacrum_left_unlabelled_anchors_on_the_l5_s1_disc(phantoms):
    ph = phantoms[2]
    lab = sitk.GetArrayFromImage(ph.label)
    lab[sitk.GetArrayViewFromImage(ph.levels) == SACRUM_VALUE] = 0  # as in labels without the sacrum
    result = read_levels(_with(ph.label, lab))
    assert result.anchor == "L5-S1 disc"
    assert result.levels_reliable, result.levels_reasons
    assert "S1" not in result.names() and {"L5", "L5-S1", "L4-L5"} <= set(result.names())
    assert _agreement(result, ph.label, ph.levels, disc_value("L4")) >= 0.95


def test_a_missed_disc_is_one_missing_name_not_a_shift(phantoms):
    ph = phantoms[0]
    lab = sitk.GetArrayFromImage(ph.label)
    lab[sitk.GetArrayViewFromImage(ph.levels) == disc_value("L3")] = 0  # the model missed L3-L4
    result = read_levels(_with(ph.label, lab))
    assert "L3-L4" not in result.names()
    assert {"L2-L3", "L4-L5", "L5-S1", "L3", "L4"} <= set(result.names())
    for name in ("L2-L3", "L4-L5", "L5-S1"):
        assert _agreement(result, ph.label, ph.levels, disc_value(name.split("-")[0])) >= 0.95
    assert not result.levels_reliable
    assert any("between L3 and L4" in r for r in result.levels_reasons)


def test_sacrum_out_of_view_gives_instances_marked_unreliable(phantoms):
    ph = phantoms[0]
    lev = _canonical(ph.levels)
    rows_l5 = np.where((lev == vertebra_value("L5")).any(axis=(0, 2)))[0]
    cut = int(rows_l5.mean())  # the field of view ends in the middle of L5
    frame = CanonicalFrame.of(ph.label, warn=False)
    assert frame.axes[1] == 1 and not frame.flips[1]  # sagittal phantom: canonical H is image y
    img = ph.label[:, :cut, :]
    result = read_levels(img)
    assert not result.levels_reliable
    assert result.anchor == "none"
    assert any("not in view" in r for r in result.levels_reasons)
    assert len(result.names("disc")) >= 5
