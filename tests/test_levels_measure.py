"""Measurements per level against the phantom's true dimensions (within 1 mm or 10%)."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from spineseg.levels import read_levels
from spineseg.phantom import make_phantom
from spineseg.phantom_truth import true_measurements

SMALL = dict(size=(440, 440, 12), spacing=(0.69, 0.69, 4.4))


def _oblique(deg: float):
    d = np.array([[0.0, 0, 1], [1, 0, 0], [0, -1, 0]])
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return tuple((np.array([[1, 0, 0], [0, c, -s], [0, s, c]]) @ d).ravel())


def _check(result, truth):
    checked = 0
    for s in result.structures:
        if s.kind == "canal" or s.partial or s.name not in truth:
            continue
        for key, true in truth[s.name].items():
            got = s.measurements.get(key)
            assert got is not None, (s.name, key)
            assert abs(got - true) <= max(1.0, 0.1 * true), (s.name, key, got, true)
            checked += 1
    return checked


@pytest.mark.parametrize("seed,orientation", [(0, "sagittal"), (4, _oblique(-20.0)), (6, _oblique(25.0))])
def test_measurements_match_the_phantom(seed, orientation):
    ph = make_phantom(seed=seed, orientation=orientation, **SMALL)
    result = read_levels(ph.label)
    assert _check(result, true_measurements(seed)) >= 50  # 6+ bodies x 5 and 6+ discs x 4 measurements


def test_measurements_do_not_depend_on_voxel_order():
    ph = make_phantom(seed=0, **SMALL)
    moved = sitk.Flip(sitk.PermuteAxes(ph.label, [1, 2, 0]), [False, True, True])
    a, b = read_levels(ph.label), read_levels(moved)
    for sa, sb in zip(a.structures, b.structures):
        assert sa.measurements == pytest.approx(sb.measurements, abs=1e-6)


def test_structures_cut_by_the_field_of_view_are_not_measured():
    ph = make_phantom(seed=0, **SMALL)
    result = read_levels(ph.label)
    partial = [s for s in result.structures if s.partial]
    assert partial and all(not s.measurements for s in partial if s.kind != "canal")
    top = result.structures[0]
    assert top.partial  # the field of view cuts the most cranial structure of this phantom
