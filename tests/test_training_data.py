"""Training data: discovery, dataset.json, validation errors naming the case, cache, folds, windows."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
import SimpleITK as sitk

from spineseg.errors import InputError

SPACING = (0.8, 0.8, 4.4)  # x (anterior->posterior), y (superior->inferior), z (slices)


def toy_case(seed: int, size: Sequence[int] = (40, 48, 6)):
    """A small sagittal volume with vertebra/disc/canal-like boxes: (image, label) as SimpleITK images.

    Classes differ in intensity and position (vertebrae and discs alternate along y, the canal is
    a bright band behind them), plus noise, so a tiny network can learn them in a few steps.
    """
    rng = np.random.default_rng(seed)
    nx, ny, nz = size
    label = np.zeros((nz, ny, nx), dtype=np.uint8)
    x0 = int(rng.integers(4, 8))
    y = int(rng.integers(2, 5))
    while y + 6 < ny:
        label[1:nz - 1, y:y + 5, x0:x0 + 14] = 1
        label[1:nz - 1, y + 5:y + 7, x0 + 1:x0 + 13] = 2
        y += 7
    label[1:nz - 1, :, x0 + 16:x0 + 20] = 3
    means = np.array([20.0, 60.0, 110.0, 160.0])
    image = means[label] + rng.normal(0, 6.0, label.shape) + 10.0
    img = sitk.GetImageFromArray(image.astype(np.float32))
    lab = sitk.GetImageFromArray(label)
    for im in (img, lab):
        im.SetSpacing(SPACING)
    return img, lab


def write_toy_cases(folder: Path, n: int, size: Sequence[int] = (40, 48, 6), ext: str = ".nii.gz") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img, lab = toy_case(i, size)
        sitk.WriteImage(img, str(folder / f"case{i:02d}_image{ext}"))
        sitk.WriteImage(lab, str(folder / f"case{i:02d}_label{ext}"))
    return folder


# ----------------------------------------------------------------------------- discovery and validation

def test_find_cases_pairs_and_dataset_json(tmp_path):
    from spineseg.training.data import find_cases

    write_toy_cases(tmp_path / "d", 3)
    cases = find_cases(tmp_path / "d")
    assert [c.id for c in cases] == ["case00", "case01", "case02"]
    assert cases[1].label.name == "case01_label.nii.gz"
    doc = {"cases": [{"id": "a", "image": "d/case00_image.nii.gz", "label": "d/case00_label.nii.gz"}],
           }
    (tmp_path / "ds.json").write_text(json.dumps(doc))
    (one,) = find_cases(tmp_path / "ds.json")
    assert one.id == "a" and one.image == (tmp_path / "d" / "case00_image.nii.gz").resolve()
    msd = {"training": [{"image": "d/case02_image.nii.gz", "label": "d/case02_label.nii.gz"}]}
    (tmp_path / "msd.json").write_text(json.dumps(msd))
    assert [c.id for c in find_cases(tmp_path / "msd.json")] == ["case02"]


def test_missing_label_names_the_case(tmp_path):
    from spineseg.training.data import find_cases

    write_toy_cases(tmp_path, 2)
    (tmp_path / "case01_label.nii.gz").unlink()
    with pytest.raises(InputError, match="case case01: .* has no label map"):
        find_cases(tmp_path)


def test_dataset_json_missing_file_names_the_case(tmp_path):
    from spineseg.training.data import find_cases

    (tmp_path / "dataset.json").write_text(json.dumps({"cases": [{"id": "x1", "image": "no.nii.gz", "label": "l.nii.gz"}]}))
    with pytest.raises(InputError, match="case x1: image .* not found"):
        find_cases(tmp_path)


def _validate(folder):
    from spineseg.training.data import find_cases, validate_cases

    return validate_cases(find_cases(folder), [1, 2, 3])


def test_geometry_mismatch_names_the_case(tmp_path):
    write_toy_cases(tmp_path, 2)
    lab = sitk.ReadImage(str(tmp_path / "case01_label.nii.gz"))
    lab.SetSpacing((0.8, 0.8, 3.0))
    sitk.WriteImage(lab, str(tmp_path / "case01_label.nii.gz"))
    with pytest.raises(InputError, match=r"case case01: image and label map have different geometry \(spacing"):
        _validate(tmp_path)


def test_size_mismatch_names_the_case(tmp_path):
    write_toy_cases(tmp_path, 1)
    _, lab = toy_case(0, size=(40, 40, 6))
    sitk.WriteImage(lab, str(tmp_path / "case00_label.nii.gz"))
    with pytest.raises(InputError, match=r"case case00: .*different geometry \(size"):
        _validate(tmp_path)


def test_label_values_outside_classes_name_the_case(tmp_path):
    write_toy_cases(tmp_path, 2)
    lab = sitk.ReadImage(str(tmp_path / "case00_label.nii.gz"))
    arr = sitk.GetArrayFromImage(lab)
    arr[0, 0, 0] = 7
    bad = sitk.GetImageFromArray(arr)
    bad.CopyInformation(lab)
    sitk.WriteImage(bad, str(tmp_path / "case00_label.nii.gz"))
    with pytest.raises(InputError, match=r"case case00: label map case00_label.nii.gz holds values \[7\]"):
        _validate(tmp_path)


def test_unreadable_file_names_the_case(tmp_path):
    write_toy_cases(tmp_path, 2)
    (tmp_path / "case01_image.nii.gz").write_bytes(b"not an image at all")
    with pytest.raises(InputError, match="case case01: .*case01_image.nii.gz"):
        _validate(tmp_path)


def test_fewer_cases_than_folds(tmp_path):
    from spineseg.training.data import kfold_split

    with pytest.raises(InputError, match="3 cases are fewer than 5 folds"):
        kfold_split(["a", "b", "c"], 5)


def test_kfold_split_is_deterministic_disjoint_and_complete():
    from spineseg.training.data import kfold_split

    ids = [f"c{i}" for i in range(11)]
    a = kfold_split(ids, 5, seed=3)
    assert a == kfold_split(list(reversed(ids)), 5, seed=3)
    flat = [c for f in a for c in f]
    assert sorted(flat) == sorted(ids) and len(flat) == len(set(flat))
    assert sorted(len(f) for f in a) == [2, 2, 2, 2, 3]
    assert kfold_split(ids, 5, seed=4) != a


def test_train_command_bad_data_exits_2_without_output(tmp_path, capsys):
    from spineseg.cli import main

    write_toy_cases(tmp_path / "d", 2)
    (tmp_path / "d" / "case00_label.nii.gz").unlink()
    rc = main(["train", str(tmp_path / "d"), "-o", str(tmp_path / "run"), "--no-n4", "--epochs", "1"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("spineseg: error: case case00:") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_cv_command_too_few_cases_exits_2(tmp_path, capsys):
    from spineseg.cli import main

    write_toy_cases(tmp_path / "d", 2)
    rc = main(["cv", str(tmp_path / "d"), "-o", str(tmp_path / "run"), "--no-n4", "--folds", "3", "--json",
               "--models", "resunet"])
    assert rc == 2
    out = capsys.readouterr().out.strip().splitlines()
    last = json.loads(out[-1])
    assert last["event"] == "error" and "fewer than 3 folds" in last["message"] and last["exit_code"] == 2
    assert not (tmp_path / "run").exists()  # refused before any data was cached


def test_unknown_model_exits_2(tmp_path, capsys):
    from spineseg.cli import main

    write_toy_cases(tmp_path / "d", 2)
    assert main(["train", str(tmp_path / "d"), "-o", str(tmp_path / "run"), "--model", "nope"]) == 2
    assert "unknown network architecture 'nope'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- cache

def test_cache_is_reused_and_keyed_by_configuration(tmp_path):
    from spineseg.preprocessing import PreprocessingConfig
    from spineseg.training.data import cache_case, find_cases

    write_toy_cases(tmp_path / "d", 1)
    (case,) = find_cases(tmp_path / "d")
    prep = PreprocessingConfig(n4=False).to_dict()
    a = cache_case(case, prep, tmp_path / "cache", [1, 2, 3])
    stamp = (a.folder / "image.npy").stat().st_mtime_ns
    b = cache_case(case, prep, tmp_path / "cache", [1, 2, 3])
    assert b.folder == a.folder and (b.folder / "image.npy").stat().st_mtime_ns == stamp
    c = cache_case(case, {**prep, "clip_upper": 99.0}, tmp_path / "cache", [1, 2, 3])
    assert c.folder != a.folder
    assert a.shape == (6, 48, 40) and a.spacing == pytest.approx((4.4, 0.8, 0.8))
    img = a.image()
    assert img.dtype == np.float32 and float(np.abs(img).max()) < 10  # z-scored, not raw intensities (10..180)
    assert set(np.unique(a.label())) == {0, 1, 2, 3}
    fg = a.foreground()
    assert len(fg) and (a.label()[tuple(fg.T)] > 0).all()
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]  # no temporary leftovers


# ----------------------------------------------------------------------------- windows and augmentation

def test_paper_epoch_plan_draws_40_percent_of_cases_16_windows_each():
    from spineseg.training.presets import preset_config
    from spineseg.training.sampling import epoch_plan

    cfg = preset_config("paper")
    ids = [f"c{i:02d}" for i in range(10)]
    plan = epoch_plan(ids, cfg, 0)
    assert len(plan) == 4 * 16 and len({c for c, _ in plan}) == 4
    assert plan == epoch_plan(ids, cfg, 0) and plan != epoch_plan(ids, cfg, 1)


def test_thicken_averages_groups_and_takes_central_label():
    from spineseg.training.sampling import thicken

    img = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)
    lab = np.arange(10, dtype=np.uint8)[:, None, None] * np.ones((1, 2, 2), np.uint8)
    t, tl = thicken(img, lab, 3, 1)
    assert t.shape == (3, 2, 2) and tl.shape == (3, 2, 2)
    assert t[:, 0, 0].tolist() == [2.0, 5.0, 8.0] and tl[:, 0, 0].tolist() == [2, 5, 8]


def test_crop_window_pads_and_foreground_weighting_finds_foreground():
    from spineseg.training.sampling import crop_window

    image = np.zeros((5, 100, 100), np.float32)
    label = np.zeros((5, 100, 100), np.uint8)
    label[:, 80:90, 80:90] = 1
    image[label > 0] = 1.0
    fg = np.argwhere(label > 0)

    def fg_share(prob):
        rng = np.random.default_rng(0)
        hits = [crop_window(image, label, (12, 16, 16), 1, rng, fg, prob)[1].any() for _ in range(40)]
        return float(np.mean(hits))

    img, lab = crop_window(image, label, (12, 16, 16), 1, np.random.default_rng(1))
    assert img.shape == (12, 16, 16) and not img[5:].any()  # 5 slices padded to 12
    assert fg_share(1.0) == 1.0 and fg_share(0.0) < 0.5
    # the crop keeps image and label aligned
    img, lab = crop_window(image, label, (4, 16, 16), 1, np.random.default_rng(2), fg, 1.0)
    assert np.array_equal(img > 0, lab > 0)


def test_augment_flips_image_and_label_together():
    from spineseg.training.sampling import augment

    rng = np.random.default_rng(0)
    img = rng.normal(size=(4, 8, 8)).astype(np.float32)
    lab = (img > 0).astype(np.uint8)
    for seed in range(8):
        a, b = augment(img, lab, np.random.default_rng(seed), flips=True, intensity=False)
        assert np.array_equal(a > 0, b > 0)
    a, _ = augment(img, lab, np.random.default_rng(5), flips=False, intensity=True)
    assert a.shape == img.shape and a.dtype == np.float32 and np.isfinite(a).all()


def test_distributed_sampler_shares_are_disjoint():
    import torch.utils.data.distributed as d

    from spineseg.training.presets import preset_config
    from spineseg.training.sampling import WindowDataset

    class _Case:  # only ids and spacing are needed to plan an epoch
        def __init__(self):
            self.spacing = (4.4, 0.8, 0.8)

    cfg = preset_config("default", windows_per_case=5, cases_per_epoch=1.0)
    ds = WindowDataset({f"c{i}": _Case() for i in range(3)}, cfg, [1, 2, 3])
    ds.set_epoch(2)
    shares = [list(d.DistributedSampler(ds, num_replicas=2, rank=r, shuffle=False, drop_last=True)) for r in (0, 1)]
    assert not set(shares[0]) & set(shares[1])
    assert len(shares[0]) == len(shares[1]) == 7


@pytest.mark.shared_data
def test_spider_cases_validate_cache_and_give_thick_slice_windows(spider_dir, tmp_path):
    """Real thin-slice data: labels within the classes, canonical cache, default windows average 5 slices."""
    from spineseg.preprocessing import PreprocessingConfig
    from spineseg.training.data import find_cases, validate_cases, cache_cases
    from spineseg.training.presets import preset_config
    from spineseg.training.sampling import WindowDataset

    folder = tmp_path / "spider"
    folder.mkdir()
    for src in sorted(spider_dir.glob("spider_*_image.nii.gz"))[:2]:
        (folder / src.name).symlink_to(src)
        lab = src.with_name(src.name.replace("_image", "_label"))
        (folder / lab.name).symlink_to(lab)
    cases = find_cases(folder)
    summary = validate_cases(cases, [1, 2, 3])
    assert all(set(c["label_values"]) <= {0, 1, 2, 3} for c in summary["cases"].values())
    cfg = preset_config("default", workers=0, preprocessing=PreprocessingConfig(n4=False).to_dict())
    cached = cache_cases(cases, cfg.preprocessing, tmp_path / "cache", [1, 2, 3])
    first = cached[cases[0].id]
    assert first.spacing[0] == pytest.approx(0.9) and first.shape[1:] == (640, 512)  # D slices, H sup-inf, W ant-post
    ds = WindowDataset(cached, cfg.replace(flips=False, intensity_aug=False, scan_aug=False), [1, 2, 3])
    assert set(ds.k.values()) == {5}
    ds.set_epoch(0)
    x, y, _ = ds[0]
    assert tuple(x.shape) == (1, 12, 128, 128) and tuple(y.shape) == (12, 128, 128)
    assert int(y.max()) <= 3
    n_thick = first.shape[0] // 5
    assert not x[0, max(n_thick, 1) + 1:].any()  # at most D // 5 thick slices, the rest is padding


# ----------------------------------------------------------------------------- in-plane spacing, mixed thickness

def test_cache_resamples_inplane_once_and_keys_by_spacing(tmp_path):
    from spineseg.preprocessing import PreprocessingConfig
    from spineseg.training.data import cache_case, find_cases

    write_toy_cases(tmp_path / "d", 1)
    (case,) = find_cases(tmp_path / "d")
    prep = PreprocessingConfig(n4=False).to_dict()
    native = cache_case(case, prep, tmp_path / "cache", [1, 2, 3])
    coarse = cache_case(case, prep, tmp_path / "cache", [1, 2, 3], inplane_mm=1.6)
    assert coarse.folder != native.folder
    assert coarse.shape == (6, 24, 20) and coarse.spacing == pytest.approx((4.4, 1.6, 1.6))
    assert json.loads((coarse.folder / "meta.json").read_text())["spacing"] == pytest.approx([4.4, 1.6, 1.6])
    lab = coarse.label()
    assert lab.dtype == np.uint8 and set(np.unique(lab)) == {0, 1, 2, 3}  # nearest neighbour: no blended values
    # every coarse label voxel is one of the 2x2 native voxels it covers (nearest, same field of view)
    fine = native.label()
    blocks = fine.reshape(6, 24, 2, 20, 2)
    assert all((blocks[..., a, :, b] == lab).mean() > 0.2 for a in (0, 1) for b in (0, 1))
    assert ((blocks == lab[:, :, None, :, None]).any(axis=(2, 4))).all()
    # the image is resampled linearly: its mean is kept
    assert float(coarse.image().mean()) == pytest.approx(float(native.image().mean()), abs=0.05)
    again = cache_case(case, prep, tmp_path / "cache", [1, 2, 3], inplane_mm=1.6)
    assert again.folder == coarse.folder
    # a spacing within the resampling tolerance keeps the data as it is
    same = cache_case(case, prep, tmp_path / "cache", [1, 2, 3], inplane_mm=0.82)
    assert same.shape == native.shape and np.array_equal(same.label(), native.label())


@pytest.mark.parametrize("prob, expected", [(1.0, {"thick"}), (0.0, {"thin"}), (0.5, {"thin", "thick"})])
def test_thick_prob_mixes_thin_and_thick_windows(prob, expected):
    from spineseg.training.data import CachedCase
    from spineseg.training.presets import preset_config
    from spineseg.training.sampling import WindowDataset

    class Memory(CachedCase):
        def image(self, mmap=True):
            return np.broadcast_to(np.arange(30, dtype=np.float32)[:, None, None] + 1, (30, 32, 32))

        def label(self, mmap=True):
            return np.ones((30, 32, 32), np.uint8)

        def foreground(self):
            return np.zeros((0, 3), np.int32)

    case = Memory("c", Path("."), (30, 32, 32), (0.9, 1.0, 1.0), [1])
    cfg = preset_config("default", window=[12, 32, 32], thick_prob=prob, flips=False, intensity_aug=False,
                        scan_aug=False, foreground_prob=0.0, windows_per_case=40)
    ds = WindowDataset({"c": case}, cfg, [1, 2, 3])
    ds.set_epoch(0)
    kinds = set()
    for i in range(len(ds)):
        img, _ = ds.window(i)
        steps = np.diff(img[:, 0, 0][img[:, 0, 0] > 0])
        kinds.add("thick" if np.allclose(steps, 5.0) else "thin" if np.allclose(steps, 1.0) else "other")
    assert kinds == expected


def test_thick_prob_and_inplane_options_are_checked():
    from spineseg.training.presets import preset_config

    with pytest.raises(InputError, match="fraction"):
        preset_config("default", thick_prob=1.5)
    with pytest.raises(InputError, match="--inplane-mm"):
        preset_config("default", inplane_mm=0.0)
