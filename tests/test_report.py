"""Evaluation and ablation reports: every file written, strict JSON, tables, bolding, refusal to overwrite."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from spineseg import report as report_mod
from spineseg.errors import InputError
from spineseg.labels import SPINE, SPINE_CLASSES
from spineseg.metrics import case_metrics, pool_metrics
from spineseg.report import ablation_rows, write_ablation_report, write_evaluation_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _toy_case(seed: int, shape=(4, 40, 32)):
    """A small canonical (D, H, W) image with blocky 'vertebra/disc/canal' labels and a perturbed prediction."""
    rng = np.random.default_rng(seed)
    gt = np.zeros(shape, np.uint8)
    for k, y in enumerate(range(2, 36, 8)):
        gt[:, y:y + 5, 6:18] = 1
        gt[:, y + 5:y + 8, 6:18] = 2
    gt[:, :, 20:24] = 3
    pred = gt.copy()
    pred[:, :, rng.integers(4, 8):rng.integers(8, 12)] = 0
    pred[:, rng.integers(0, 10):rng.integers(10, 20), 24:26] = 3
    image = gt * 40.0 + rng.normal(0, 10, shape)
    return image.astype(np.float32), gt, pred


@pytest.fixture(scope="module")
def toy():
    data = {f"case{i}": _toy_case(i) for i in range(5)}
    cases = {cid: case_metrics(p, g, SPINE_CLASSES) for cid, (_, g, p) in data.items()}
    return data, cases


def _png_ok(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    import matplotlib.image as mpimg

    assert mpimg.imread(str(path)).shape[0] > 100


def test_evaluation_report_writes_every_file(tmp_path: Path, toy) -> None:
    data, cases = toy
    folds = {cid: i % 2 for i, cid in enumerate(sorted(cases))}
    curves = {"0": [{"epoch": e, "loss": 1 / e, "val_dsc": 1 - 1 / (e + 1), "lr": 1e-3, "eta_s": 9.0 - e}
                    for e in range(1, 6)],
              "1": [{"epoch": e, "loss": 1.2 / e, "val_dsc": 1 - 1.2 / (e + 1), "lr": 1e-3} for e in range(1, 6)]}
    asked = []

    def overlays(cid):
        asked.append(cid)
        return data[cid] + ((4.4, 0.35, 0.35),)

    md = write_evaluation_report(tmp_path / "r", cases, SPINE_CLASSES, folds=folds, curves=curves,
                                 overlays=overlays, title="toy")
    out = tmp_path / "r"
    best = max(cases, key=lambda c: cases[c]["mean_dsc"])
    worst = min(cases, key=lambda c: cases[c]["mean_dsc"])
    assert best != worst and asked == [best, worst]
    names = {p.name for p in out.iterdir()}
    expected = {"report.md", "metrics.csv", "metrics.json", "confusion_matrix.png", "per_fold_dsc.png",
                "learning_curves.png", f"overlay_best_{best}.png", f"overlay_worst_{worst}.png"}
    assert names == expected  # nothing else, no temporary files
    for n in expected:
        if n.endswith(".png"):
            _png_ok(out / n)
    text = md.read_text()
    for n in expected - {"report.md", "metrics.csv", "metrics.json"}:
        assert f"]({n})" in text  # embedded
    assert text.startswith("# toy")
    # the summary row of each class shows its mean over cases
    for c in SPINE_CLASSES:
        mean = np.mean([cases[k]["classes"][c.name]["dsc"] for k in cases])
        assert re.search(rf"\| {c.name} \| {mean:.3f} ± ", text)
    # strict JSON (no NaN tokens), with pooled and per-fold sections
    doc = json.loads((out / "metrics.json").read_text(), parse_constant=lambda s: pytest.fail(f"non-strict JSON {s}"))
    assert doc["best_case"] == best and doc["worst_case"] == worst
    assert set(doc["per_fold"]) == {"0", "1"} and doc["pooled"]["n_cases"] == 5
    assert doc["pooled"]["mean_dsc"] == pytest.approx(pool_metrics(cases, SPINE_CLASSES)["mean_dsc"])
    # CSV: one row per case and structure (3 classes + union)
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 5 * 4
    r = next(r for r in rows if r["case"] == "case0" and r["structure"] == "vertebra")
    assert float(r["dsc"]) == pytest.approx(cases["case0"]["classes"]["vertebra"]["dsc"])
    assert r["fold"] == "0" and int(r["tp"]) == cases["case0"]["classes"]["vertebra"]["tp"]


def test_learning_curve_panels(tmp_path: Path, monkeypatch) -> None:
    from spineseg.report import plot_learning_curves

    curves = {0: [{"epoch": 1, "loss": 0.9, "val_dsc": None, "eta_s": 5.0, "windows_per_s": 30.0},
                  {"epoch": 2, "loss": 0.5, "val_dsc": 0.4, "eta_s": 2.0, "windows_per_s": 31.0}]}
    fig_titles = []
    real_save = report_mod._save_png

    def spy(fig, path, overwrite):
        fig_titles.extend(ax.get_title() for ax in fig.axes)
        return real_save(fig, path, overwrite)

    monkeypatch.setattr(report_mod, "_save_png", spy)
    _png_ok(plot_learning_curves(curves, tmp_path / "c.png"))
    assert fig_titles == ["training loss", "validation DSC"]
    with pytest.raises(ValueError, match="no numeric"):
        plot_learning_curves({0: [{"epoch": 1}]}, tmp_path / "d.png")


def test_read_evaluation_round_trip(tmp_path: Path, toy) -> None:
    from spineseg.report import read_evaluation

    _, cases = toy
    cases = dict(cases, empty=case_metrics(np.zeros(4, int), np.zeros(4, int), SPINE_CLASSES))  # NaN everywhere
    folds = {c: 1 for c in cases}
    write_evaluation_report(tmp_path, cases, SPINE_CLASSES, folds=folds)
    back, classes, back_folds = read_evaluation(tmp_path)
    assert classes == list(SPINE_CLASSES) and back_folds == folds
    a, b = pool_metrics(cases, SPINE_CLASSES), pool_metrics(back, classes)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert np.isnan(back["empty"]["mean_dsc"])
    with pytest.raises(InputError, match="not a SpineSeg"):
        (tmp_path / "x.json").write_text("{}")
        read_evaluation(tmp_path / "x.json")


def test_report_refuses_to_overwrite_and_replaces_stale_overlays(tmp_path: Path, toy) -> None:
    data, cases = toy
    write_evaluation_report(tmp_path, cases, SPINE_CLASSES, overlays=lambda c: data[c])
    before = (tmp_path / "metrics.json").read_bytes()
    with pytest.raises(InputError, match="already holds a report"):
        write_evaluation_report(tmp_path, cases, SPINE_CLASSES)
    assert (tmp_path / "metrics.json").read_bytes() == before
    subset = {k: cases[k] for k in ("case1", "case2")}
    write_evaluation_report(tmp_path, subset, SPINE_CLASSES, overlays=lambda c: data[c], overwrite=True)
    overlays = sorted(p.name for p in tmp_path.glob("overlay_*.png"))
    assert len(overlays) == 2 and all(("case1" in n) or ("case2" in n) for n in overlays)
    assert json.loads((tmp_path / "metrics.json").read_text())["pooled"]["n_cases"] == 2


def test_report_without_matplotlib_still_writes_tables(tmp_path: Path, toy, monkeypatch) -> None:
    _, cases = toy
    monkeypatch.setattr(report_mod, "matplotlib_available", lambda: False)
    with pytest.warns(UserWarning, match="matplotlib"):
        md = write_evaluation_report(tmp_path, cases, SPINE_CLASSES)
    assert {p.name for p in tmp_path.iterdir()} == {"report.md", "metrics.csv", "metrics.json"}
    assert "figures skipped" in md.read_text() and ".png" not in md.read_text()


def test_binary_report_has_no_duplicate_union_row(tmp_path: Path) -> None:
    gt = np.zeros((2, 8, 8), np.uint8)
    gt[:, 2:6, 2:6] = 1
    pred = np.roll(gt, 1, axis=2)
    cases = {"x": case_metrics(pred, gt, [SPINE]), "y": case_metrics(gt, gt, [SPINE])}
    md = write_evaluation_report(tmp_path, cases, [SPINE]).read_text()
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [r["structure"] for r in rows] == ["spine", "spine"]
    assert "spine (all foreground)" not in md


def _pool(dscs_by_model):
    """pool_metrics of models whose vertebra prediction misses a chosen number of voxels per case."""
    gt = np.zeros(100, np.uint8)
    gt[:40] = 1
    gt[40:60] = 2
    gt[60:70] = 3
    out = {}
    for model, misses in dscs_by_model.items():
        cases = {}
        for i, miss in enumerate(misses):
            pred = gt.copy()
            pred[:miss] = 0
            cases[f"c{i}"] = case_metrics(pred, gt, SPINE_CLASSES)
        out[model] = pool_metrics(cases, SPINE_CLASSES)
    return out


def test_ablation_table_layout_and_bolding(tmp_path: Path) -> None:
    results = _pool({"hybrid": [0, 2], "resunet": [4, 6], "unetpp": [0, 2]})
    md = write_ablation_report(tmp_path, results, SPINE_CLASSES, title="Table 1").read_text()
    assert {p.name for p in tmp_path.iterdir()} == {"ablation.md", "ablation.csv", "ablation.json"}
    header = next(line for line in md.splitlines() if line.startswith("| metric"))
    assert header == "| metric | structure | hybrid | resunet | unetpp |"  # models as columns, in order
    rows = [line for line in md.split("Pooled")[0].splitlines() if line.startswith("|")][2:]
    assert len(rows) == 3 * 5  # DSC, PPV, sensitivity x (3 classes, union, class mean)
    vert_dsc = next(r for r in rows if r.startswith("| DSC | vertebra"))
    cells = [c.strip() for c in vert_dsc.strip("|").split("|")][2:]
    # hybrid and unetpp tie for the best vertebra DSC: both bold, resunet not
    assert cells[0].startswith("**") and cells[2].startswith("**") and not cells[1].startswith("**")
    assert cells[0] == cells[2]
    # PPV of the vertebra is 1.0 for every model: all bold
    vert_ppv = next(r for r in rows if r.startswith("| PPV | vertebra"))
    assert vert_ppv.count("**") == 6
    # sensitivity row: resunet is strictly worst
    sens = next(r for r in rows if "vertebra" in r and r.startswith("| Sensitivity"))
    assert [c.strip().startswith("**") for c in sens.strip("|").split("|")[2:]] == [True, False, True]
    # machine-readable versions agree
    data = json.loads((tmp_path / "ablation.json").read_text())
    assert data["models"] == ["hybrid", "resunet", "unetpp"]
    best = {(r["metric"], r["structure"]): r["best"] for r in data["rows"]}
    assert best[("dsc", "vertebra")] == ["hybrid", "unetpp"]
    csv_rows = list(csv.DictReader((tmp_path / "ablation.csv").open()))
    assert len(csv_rows) == 15 * 3
    assert {r["model"] for r in csv_rows if r["best"] == "1" and r["metric"] == "dsc" and r["structure"] == "vertebra"} \
        == {"hybrid", "unetpp"}
    with pytest.raises(InputError, match="exists"):
        write_ablation_report(tmp_path, results, SPINE_CLASSES)


def test_ablation_ignores_undefined_values() -> None:
    gt = np.array([0, 1, 1, 0])
    a = pool_metrics({"c": case_metrics(np.array([0, 1, 1, 0]), gt, SPINE_CLASSES)}, SPINE_CLASSES)
    b = pool_metrics({"c": case_metrics(np.array([0, 1, 0, 2]), gt, SPINE_CLASSES)}, SPINE_CLASSES)
    rows = {(r["metric"], r["structure"]): r for r in ablation_rows({"a": a, "b": b}, SPINE_CLASSES)}
    # disc: absent in gt; model a never predicts it (undefined), b predicts it (DSC 0): b's 0 is the only value
    assert rows[("dsc", "intervertebral disc")]["best"] == ["b"]
    # canal absent everywhere: no best
    assert rows[("dsc", "spinal canal")]["best"] == []


def test_ablation_with_a_binary_column_fills_only_the_union_row(tmp_path: Path) -> None:
    results = _pool({"hybrid": [0, 2]})
    gt = np.zeros(100, np.uint8)
    gt[:70] = 1
    pred = gt.copy()
    pred[:5] = 0
    results["hybrid (paper)"] = pool_metrics({"c0": case_metrics(pred, gt, [SPINE]),
                                              "c1": case_metrics(gt, gt, [SPINE])}, [SPINE])
    rows = {(r["metric"], r["structure"]): r for r in ablation_rows(results, SPINE_CLASSES)}
    union = rows[("dsc", "spine (all foreground)")]["values"]["hybrid (paper)"]
    assert union["mean"] == pytest.approx(results["hybrid (paper)"]["union"]["mean"]["dsc"])
    for structure in ("vertebra", "mean over classes"):
        assert rows[("dsc", structure)]["values"]["hybrid (paper)"]["mean"] is None
        assert rows[("dsc", structure)]["best"] == ["hybrid"]
    md = write_ablation_report(tmp_path, results, SPINE_CLASSES).read_text()
    assert "n/a" in md.split("| DSC | vertebra")[1].splitlines()[0]
