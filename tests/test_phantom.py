"""The synthetic phantom: determinism, labels, anatomy, geometry, bias/noise, and ``spineseg phantom``."""
from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from spineseg import cli
from spineseg.errors import InputError
from spineseg.geometry import CanonicalFrame, slice_axis
from spineseg.phantom import ORIENTATIONS, make_phantom

# small but anatomically complete: the default 303.6 mm field of view at 1.9 mm in-plane
SMALL = dict(size=(160, 160, 12), spacing=(1.8975, 1.8975, 4.4))


def arrays(ph):
    return sitk.GetArrayFromImage(ph.image), sitk.GetArrayFromImage(ph.label)


@pytest.fixture(scope="module")
def ph0():
    return make_phantom(seed=0, **SMALL)


def label_at(ph, point) -> int:
    index = ph.label.TransformPhysicalPointToIndex(tuple(point))
    return int(ph.label[index])


def inside(image, point) -> bool:
    index = image.TransformPhysicalPointToContinuousIndex(tuple(point))
    return all(-0.5 <= i <= n - 0.5 for i, n in zip(index, image.GetSize()))


def test_deterministic_for_a_seed(ph0):
    again = make_phantom(seed=0, **SMALL)
    a0, l0 = arrays(ph0)
    a1, l1 = arrays(again)
    assert np.array_equal(a0, a1) and np.array_equal(l0, l1)
    assert ph0.image.GetOrigin() == again.image.GetOrigin()


def test_different_seeds_differ(ph0):
    other = make_phantom(seed=1, **SMALL)
    a0, l0 = arrays(ph0)
    a1, l1 = arrays(other)
    assert np.mean(l0 != l1) > 0.005  # anatomy differs, not only the noise
    assert not np.allclose(a0, a1)
    assert ph0.params["levels"][5]["height_mm"] != other.params["levels"][5]["height_mm"]


def test_types_and_label_values(ph0):
    assert ph0.image.GetPixelID() == sitk.sitkFloat32
    assert ph0.label.GetPixelID() == sitk.sitkUInt8
    image, label = arrays(ph0)
    assert np.isfinite(image).all() and image.min() >= 0
    assert set(np.unique(label)) == {0, 1, 2, 3}
    # each class is a sensible share of the field of view
    fractions = np.bincount(label.ravel(), minlength=4) / label.size
    assert 0.02 < fractions[1] < 0.2 and 0.003 < fractions[2] < 0.05 and 0.002 < fractions[3] < 0.05


def test_binary_is_the_union_of_the_classes(ph0):
    binary = make_phantom(seed=0, binary=True, **SMALL)
    _, multi = arrays(ph0)
    _, union = arrays(binary)
    assert set(np.unique(union)) == {0, 1}
    assert np.array_equal(union, (multi > 0).astype(np.uint8))


def test_discs_lie_between_vertebral_bodies(ph0):
    levels = ph0.params["levels"]
    names = [lv["name"] for lv in levels]
    assert names[3:9] == ["L1", "L2", "L3", "L4", "L5", "S1"]
    checked = 0
    for upper, lower in zip(levels[2:8], levels[3:9]):  # T12-L1 .. L5-S1
        p_up, p_lo = np.array(upper["center_lps"]), np.array(lower["center_lps"])
        if not (inside(ph0.label, p_up) and inside(ph0.label, p_lo)):
            continue
        assert label_at(ph0, p_up) == 1 and label_at(ph0, p_lo) == 1, (upper["name"], lower["name"])
        assert label_at(ph0, (p_up + p_lo) / 2) == 2, f"no disc between {upper['name']} and {lower['name']}"
        assert p_lo[2] < p_up[2]  # the lower level is inferior (LPS +z is superior)
        checked += 1
    assert checked >= 5


def test_canal_is_posterior_to_the_bodies(ph0):
    frame = CanonicalFrame.of(ph0.label)
    label = frame.to_canonical(sitk.GetArrayFromImage(ph0.label))  # (D, H=S-I, W=A-P)
    middle = label[label.shape[0] // 2]
    rows = 0
    for row in middle:
        disc, canal = np.nonzero(row == 2)[0], np.nonzero(row == 3)[0]
        if disc.size and canal.size:
            assert canal.min() > disc.max(), "canal must lie posterior to the discs"
            rows += 1
    assert rows >= 5
    # the canal tapers off in the sacrum and never reaches the lowest rows of the spine
    spine_rows = np.nonzero((middle == 1).any(axis=1))[0]
    canal_rows = np.nonzero((middle == 3).any(axis=1))[0]
    assert canal_rows.max() < spine_rows.max()


def test_thick_slices_show_less_laterally(ph0):
    _, label = arrays(ph0)  # sagittal: numpy axis 0 is right->left
    per_slice = [(label[k] == 1).sum() for k in range(label.shape[0])]
    canal = [(label[k] == 3).sum() for k in range(label.shape[0])]
    middle = label.shape[0] // 2
    assert per_slice[0] < 0.6 * per_slice[middle] and per_slice[-1] < 0.6 * per_slice[middle]
    assert canal[0] == 0 and canal[-1] == 0 and canal[middle] > 0
    image, _ = arrays(make_phantom(seed=0, noise=0.0, bias=False, **SMALL))
    # partial volume: averaged sub-slices give intensities between the tissue levels
    assert len(np.unique(np.round(image))) > 200


def test_default_geometry_is_sagittal_thick_slice(ph0):
    ph = make_phantom(seed=3, size=(64, 80, 12), spacing=(4.7, 3.8, 4.4))
    assert ph.image.GetSize() == (64, 80, 12) and ph.label.GetSize() == (64, 80, 12)
    assert np.allclose(ph.image.GetSpacing(), (4.7, 3.8, 4.4))
    assert ph.image.GetDirection() == ORIENTATIONS["sagittal"]
    d = np.array(ph.image.GetDirection()).reshape(3, 3)
    assert np.allclose(d[:, 0], (0, 1, 0)) and np.allclose(d[:, 1], (0, 0, -1)) and np.allclose(d[:, 2], (1, 0, 0))
    for key in ("GetOrigin", "GetSpacing", "GetDirection", "GetSize"):
        assert getattr(ph.image, key)() == getattr(ph.label, key)()


@pytest.mark.parametrize("orientation", ["axial", "coronal"])
def test_other_orientations_slice_the_same_anatomy(ph0, orientation):
    ph = make_phantom(seed=0, orientation=orientation, size=(100, 100, 12), spacing=(3.0, 3.0, 4.4))
    assert ph.image.GetDirection() == ORIENTATIONS[orientation]
    assert slice_axis(ph.image, warn=False) == 2  # thick slices along image z
    assert ph.params["levels"] == ph0.params["levels"]  # same seed, same anatomy
    hits = 0
    for level in ph.params["levels"][:8]:
        p = np.array(level["center_lps"])
        if inside(ph.label, p):
            assert label_at(ph, p) == 1, level["name"]
            hits += 1
    assert hits >= 1
    assert set(np.unique(sitk.GetArrayFromImage(ph.label))) >= {0, 1}


def test_direction_matrix_orientation():
    angle = np.radians(20)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    direction = rot @ np.array(ORIENTATIONS["sagittal"]).reshape(3, 3)
    ph = make_phantom(seed=0, orientation=direction.ravel().tolist(), size=(96, 96, 12), spacing=(3.2, 3.2, 4.4))
    assert np.allclose(ph.image.GetDirection(), direction.ravel())
    label = sitk.GetArrayFromImage(ph.label)
    assert {1, 2, 3} <= set(np.unique(label))
    l3 = np.array(ph.params["levels"][5]["center_lps"])
    assert ph.params["levels"][5]["name"] == "L3"
    assert label_at(ph, l3) == 1


def test_bias_and_noise_are_present():
    clean_image, label = arrays(make_phantom(seed=2, noise=0.0, bias=False, **SMALL))
    biased, _ = arrays(make_phantom(seed=2, noise=0.0, bias=True, **SMALL))
    noisy, _ = arrays(make_phantom(seed=2, noise=0.02, bias=False, **SMALL))
    air = clean_image == 0
    assert air.mean() > 0.05
    # Rician noise: air becomes Rayleigh-distributed with mean sigma * sqrt(pi / 2)
    sigma = 0.02 * 1000
    assert np.mean(noisy[air]) == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.1)
    assert not np.array_equal(noisy[~air], clean_image[~air])
    # bias: a smooth multiplicative field, brighter near the posterior coil than far anteriorly
    body = clean_image > 50
    ratio = np.where(body, biased / np.maximum(clean_image, 1e-6), np.nan)
    assert np.nanstd(ratio) > 0.05
    assert 0.2 < np.nanmin(ratio) and np.nanmax(ratio) < 3
    frame = CanonicalFrame.of(make_phantom(seed=2, noise=0.0, bias=False, **SMALL).image)
    r = frame.to_canonical(ratio)  # (D, H, W=A-P)
    anterior, posterior = np.nanmean(r[:, :, : r.shape[2] // 4]), np.nanmean(r[:, :, -r.shape[2] // 3:])
    assert posterior > anterior
    step = np.nanmean(np.abs(np.diff(r, axis=2)))
    assert step < 0.01  # smooth: neighbours differ by under 1%


@pytest.mark.parametrize("kwargs", [
    dict(size=(0, 10, 10)), dict(size=(10, 10)), dict(spacing=(1, -1, 1)), dict(noise=-0.1),
    dict(orientation="oblique"), dict(orientation=[1, 0, 0, 0, 1, 0, 0, 0, 2]), dict(orientation=[1, 0, 0]),
])
def test_bad_parameters_raise_input_error(kwargs):
    with pytest.raises(InputError):
        make_phantom(**{**dict(size=(16, 16, 4), spacing=(20, 20, 10)), **kwargs})


def test_python39_syntax():
    root = Path(__file__).resolve().parents[1] / "spineseg"
    for path in (root / "phantom.py", root / "commands" / "phantom.py"):
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 9))


# ----------------------------------------------------------------------------- CLI

ARGS = ["--size", "48", "48", "12", "--spacing", "6.3", "6.3", "4.4"]


def test_cli_writes_pairs(tmp_path, capsys):
    out = tmp_path / "data"
    assert cli.main(["phantom", "-o", str(out), "--count", "2", "--seed", "5", "--name", "ph", *ARGS]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["ph_0_image.nii.gz", "ph_0_label.nii.gz", "ph_1_image.nii.gz", "ph_1_label.nii.gz"]
    image = sitk.ReadImage(str(out / "ph_1_image.nii.gz"))
    label = sitk.ReadImage(str(out / "ph_1_label.nii.gz"))
    assert image.GetSize() == (48, 48, 12) and label.GetPixelID() == sitk.sitkUInt8
    expected = make_phantom(seed=6, size=(48, 48, 12), spacing=(6.3, 6.3, 4.4))
    assert np.array_equal(sitk.GetArrayFromImage(label), sitk.GetArrayFromImage(expected.label))
    assert np.allclose(image.GetOrigin(), expected.image.GetOrigin(), atol=1e-4)


def test_cli_single_binary_axial(tmp_path):
    assert cli.main(["phantom", "-o", str(tmp_path), "--binary", "--orientation", "axial", *ARGS]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["phantom_image.nii.gz", "phantom_label.nii.gz"]
    label = sitk.ReadImage(str(tmp_path / "phantom_label.nii.gz"))
    assert set(np.unique(sitk.GetArrayFromImage(label))) <= {0, 1}
    assert label.GetDirection() == ORIENTATIONS["axial"]


def test_cli_refuses_to_overwrite_and_checks_all_targets_first(tmp_path, capsys):
    existing = tmp_path / "phantom_1_label.nii.gz"
    existing.write_bytes(b"keep me")
    assert cli.main(["phantom", "-o", str(tmp_path), "--count", "2", *ARGS]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spineseg: error: ") and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["phantom_1_label.nii.gz"]  # nothing written
    assert existing.read_bytes() == b"keep me"
    assert cli.main(["phantom", "-o", str(tmp_path), "--count", "2", "--overwrite", *ARGS]) == 0
    assert sitk.ReadImage(str(existing)).GetSize() == (48, 48, 12)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


@pytest.mark.parametrize("extra", [
    ["--orientation", "sideways"], ["--count", "0"], ["--name", "a/b"], ["--size", "0", "10", "10"],
    ["--spacing", "1", "0", "1"], ["--orientation", "1,0,0,0,1,0,0,0"],
])
def test_cli_bad_input_exits_2_without_output(tmp_path, capsys, extra):
    out = tmp_path / "out"
    assert cli.main(["phantom", "-o", str(out), *ARGS, *extra]) == 2
    assert capsys.readouterr().err.startswith("spineseg: error: ")
    assert not out.exists() or not any(out.iterdir())


def test_cli_output_is_a_file(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("x")
    assert cli.main(["phantom", "-o", str(target), *ARGS]) == 2
    assert "folder" in capsys.readouterr().err
    assert target.read_text() == "x"
    assert os.listdir(tmp_path) == ["file.txt"]
