"""``spineseg evaluate``: case matching, the report it writes, and every bad input -> exit 2 with no output."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from spineseg.cli import main
from spineseg.evaluation import case_name
from spineseg.labels import SPINE_CLASSES
from spineseg.metrics import case_metrics
from spineseg.progress import parse_json_line

SHAPE = (5, 48, 40)  # z, y, x


def _labels(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = np.zeros(SHAPE, np.uint8)
    a[:, 4:40, 8:20] = 1
    a[:, 12:16, 8:20] = 2
    a[:, 28:31, 8:20] = 2
    a[:, :, 22:26] = 3
    a[:, :, 8 + rng.integers(0, 3)] = 0
    return a


def _write(array: np.ndarray, path: Path, spacing=(0.5, 0.5, 4.0)) -> Path:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))
    return path


@pytest.fixture
def dataset(tmp_path: Path):
    """gt/ as a training-data folder (images + labels), pred/ as `spineseg segment` writes it."""
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    truth, preds = {}, {}
    for i in range(3):
        cid = f"case{i}"
        g = _labels(i)
        p = np.roll(g, i + 1, axis=1)
        _write(g, gt_dir / f"{cid}_label.nii.gz")
        _write((g * 50 + i).astype(np.float32) + np.arange(SHAPE[2], dtype=np.float32), gt_dir / f"{cid}_image.nii.gz")
        _write(p, pred_dir / f"{cid}_image_seg.nii.gz")
        truth[cid], preds[cid] = g, p
    return gt_dir, pred_dir, truth, preds


@pytest.mark.parametrize("name, case", [
    ("case7_image_seg.nii.gz", "case7"), ("case7_seg.nii.gz", "case7"), ("case7_pred.nrrd", "case7"),
    ("case7_label.nii.gz", "case7"), ("case7.mha", "case7"), ("case7_image.nii", "case7"),
    ("my_seg_label.nii.gz", "my_seg"), ("_seg.nii.gz", "_seg"),
])
def test_case_name_rule(name: str, case: str) -> None:
    assert case_name(Path(name)) == case


def test_evaluate_folders_writes_report(dataset, tmp_path: Path, capsys) -> None:
    gt_dir, pred_dir, truth, preds = dataset
    out = tmp_path / "report"
    assert main(["evaluate", str(pred_dir), str(gt_dir), "-o", str(out), "--images", str(gt_dir), "--title", "t"]) == 0
    assert "3 cases evaluated" in capsys.readouterr().out
    names = {p.name for p in out.iterdir()}
    assert {"report.md", "metrics.csv", "metrics.json", "confusion_matrix.png"} <= names
    assert len([n for n in names if n.startswith("overlay_")]) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    doc = json.loads((out / "metrics.json").read_text())
    assert sorted(doc["cases"]) == ["case0", "case1", "case2"]
    for cid in truth:
        expected = case_metrics(preds[cid], truth[cid], SPINE_CLASSES)
        for c in SPINE_CLASSES:
            assert doc["cases"][cid]["classes"][c.name]["dsc"] == pytest.approx(expected["classes"][c.name]["dsc"])
    # a second run refuses the non-empty report folder, --overwrite replaces it
    before = (out / "metrics.json").read_bytes()
    assert main(["evaluate", str(pred_dir), str(gt_dir), "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "metrics.json").read_bytes() == before
    assert main(["evaluate", str(pred_dir), str(gt_dir), "-o", str(out), "--overwrite", "--classes", "binary"]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert [c["name"] for c in doc["classes"]] == ["spine"]


def test_evaluate_single_files_json(dataset, tmp_path: Path, capsys) -> None:
    gt_dir, pred_dir, truth, preds = dataset
    out = tmp_path / "one"
    rc = main(["evaluate", str(pred_dir / "case1_image_seg.nii.gz"), str(gt_dir / "case1_label.nii.gz"),
               "-o", str(out), "--json"])
    assert rc == 0
    events = [parse_json_line(line) for line in capsys.readouterr().out.splitlines()]
    assert all(e is not None for e in events)
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    done = events[-1]
    assert done["event"] == "done" and done["cases"] == 1
    assert done["mean_dsc"] == pytest.approx(case_metrics(preds["case1"], truth["case1"], SPINE_CLASSES)["mean_dsc"])


def test_unmatched_cases_are_warned_and_reported(dataset, tmp_path: Path, capsys) -> None:
    gt_dir, pred_dir, _, _ = dataset
    (pred_dir / "case2_image_seg.nii.gz").rename(pred_dir / "other_seg.nii.gz")
    out = tmp_path / "r"
    assert main(["evaluate", str(pred_dir), str(gt_dir), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "without ground truth" in err and "other" in err and "without a prediction" in err and "case2" in err
    assert "without a prediction" in (out / "report.md").read_text()


def test_binary_prediction_against_multiclass_ground_truth(tmp_path: Path, capsys) -> None:
    """A binary model's map (spine = 1) scored against vertebra/disc/canal ground truth: evaluate maps the
    ground truth as validation does (metrics.reference_labels: every structure is spine), so the two agree."""
    from spineseg.labels import SPINE
    from spineseg.metrics import reference_labels

    gt = _labels(0)
    pred = np.isin(gt, (1, 2)).astype(np.uint8)  # vertebrae and discs found, the canal missed
    pred[0] = 0  # and one slice missed entirely
    _write(gt, tmp_path / "c_label.nii.gz")
    _write(pred, tmp_path / "c_seg.nii.gz")
    assert main(["evaluate", str(tmp_path / "c_seg.nii.gz"), str(tmp_path / "c_label.nii.gz"), "-o",
                 str(tmp_path / "r"), "--classes", "binary"]) == 0
    capsys.readouterr()
    user = json.loads((tmp_path / "r" / "metrics.json").read_text())["cases"]["c"]
    fg = int((gt != 0).sum())
    expected = 2 * int(pred.sum()) / (int(pred.sum()) + fg)  # pred lies inside the ground truth's structures
    assert user["classes"]["spine"]["dsc"] == pytest.approx(expected, abs=1e-12)
    assert user["classes"]["spine"]["gt_voxels"] == fg
    validation = case_metrics(reference_labels(pred, [SPINE], True), reference_labels(gt, [SPINE], True), [SPINE])
    assert user["classes"]["spine"] == pytest.approx(validation["classes"]["spine"], abs=1e-12)


def _no_output(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def test_missing_folder(dataset, tmp_path: Path, capsys) -> None:
    gt_dir, _, _, _ = dataset
    out = tmp_path / "r"
    assert main(["evaluate", str(tmp_path / "nope"), str(gt_dir), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spineseg: error: ") and "nope" in err and len(err.strip().splitlines()) == 1
    _no_output(out)


def test_mismatched_geometry_names_the_case(dataset, tmp_path: Path, capsys) -> None:
    gt_dir, pred_dir, truth, _ = dataset
    _write(truth["case1"], pred_dir / "case1_image_seg.nii.gz", spacing=(0.5, 0.6, 4.0))
    out = tmp_path / "r"
    assert main(["evaluate", str(pred_dir), str(gt_dir), "-o", str(out), "--json"]) == 2
    captured = capsys.readouterr()
    assert "case case1" in captured.err and "spacing" in captured.err and "resample" in captured.err
    error = parse_json_line(captured.out.splitlines()[-1])
    assert error["event"] == "error" and error["exit_code"] == 2 and "case1" in error["message"]
    _no_output(out)
    _write(truth["case1"][:, :-1], pred_dir / "case1_image_seg.nii.gz")
    assert main(["evaluate", str(pred_dir), str(gt_dir), "-o", str(out)]) == 2
    assert "size" in capsys.readouterr().err
    _no_output(out)


def test_no_matching_cases(dataset, tmp_path: Path, capsys) -> None:
    gt_dir, _, truth, _ = dataset
    other = tmp_path / "other"
    _write(truth["case0"], other / "unrelated_seg.nii.gz")
    out = tmp_path / "r"
    assert main(["evaluate", str(other), str(gt_dir), "-o", str(out)]) == 2
    assert "no case names match" in capsys.readouterr().err
    _no_output(out)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["evaluate", str(empty), str(gt_dir), "-o", str(out)]) == 2
    assert "no label maps" in capsys.readouterr().err
    _no_output(out)


@pytest.mark.parametrize("how, message", [
    ("values", "label values [7]"),
    ("float", "non-integer"),
    ("mixed", "two label files or two folders"),
    ("classes", "--classes"),
    ("duplicate", "both case"),
])
def test_other_bad_input(dataset, tmp_path: Path, capsys, how: str, message: str) -> None:
    gt_dir, pred_dir, truth, _ = dataset
    pred, gt = str(pred_dir), str(gt_dir)
    extra = []
    if how == "values":
        _write(np.where(truth["case2"] == 3, 7, truth["case2"]).astype(np.uint8), pred_dir / "case2_image_seg.nii.gz")
    elif how == "float":
        _write(truth["case0"].astype(np.float32) * 0.5, pred_dir / "case0_image_seg.nii.gz")
    elif how == "mixed":
        pred = str(pred_dir / "case0_image_seg.nii.gz")
    elif how == "classes":
        extra = ["--classes", "vertebra"]
    elif how == "duplicate":
        _write(truth["case0"], pred_dir / "case0_pred.nii.gz")
    out = tmp_path / "r"
    assert main(["evaluate", pred, gt, "-o", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    _no_output(out)


def test_spider_case_against_perturbed_copy(spider_dir: Path, tmp_path: Path, capsys) -> None:
    label = sorted(spider_dir.glob("*_label.nii.gz"))[0]
    cid = label.name[: -len("_label.nii.gz")]
    gt = sitk.ReadImage(str(label))
    eroded = sitk.BinaryErode(sitk.Cast(gt > 0, sitk.sitkUInt8), [3, 3, 0])
    pred = sitk.Mask(gt, eroded)
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    sitk.WriteImage(pred, str(pred_dir / f"{cid}_image_seg.nii.gz"))
    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    (gt_dir / label.name).symlink_to(label)
    (gt_dir / f"{cid}_image.nii.gz").symlink_to(spider_dir / f"{cid}_image.nii.gz")
    out = tmp_path / "r"
    assert main(["evaluate", str(pred_dir), str(gt_dir), "-o", str(out), "--images", str(gt_dir)]) == 0
    case = json.loads((out / "metrics.json").read_text())["cases"][cid]
    for c in SPINE_CLASSES:
        r = case["classes"][c.name]
        assert r["ppv"] == 1.0  # erosion only removes voxels
        assert 0.3 < r["sensitivity"] < 1.0 and 0.3 < r["dsc"] < 1.0
    assert (out / f"overlay_best_{cid}.png").exists()
