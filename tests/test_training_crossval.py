"""A tiny cross-validation on phantoms writes every report file, the ablation table, and beats chance."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk


def write_phantoms(folder: Path, n: int) -> Path:
    from spineseg.phantom import make_phantom

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        p = make_phantom(size=(48, 48, 6), spacing=(1.8, 1.8, 4.4), seed=i, supersample=1)
        sitk.WriteImage(p.image, str(folder / f"ph{i}_image.nii.gz"))
        sitk.WriteImage(p.label, str(folder / f"ph{i}_label.nii.gz"))
    return folder


@pytest.mark.slow
def test_tiny_cv_writes_reports_and_ablation_and_beats_chance(tmp_path, capsys):
    from spineseg.cli import main

    data = write_phantoms(tmp_path / "data", 4)
    out = tmp_path / "cv"
    rc = main(["cv", str(data), "-o", str(out), "--folds", "2", "--models", "no-hanc,resunet", "--hparam", "width=4",
               "--epochs", "3", "--val-every", "3", "--window", "4", "32", "32", "--windows-per-case", "4",
               "--batch", "4", "--lr", "0.01", "--no-n4", "--workers", "0", "--device", "cpu", "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    events = [json.loads(x) for x in captured.out.splitlines()]
    folds = [e for e in events if e["event"] == "fold"]
    assert [(e["model"], e["fold"]) for e in folds] == [("no-hanc", 0), ("no-hanc", 1), ("resunet", 0), ("resunet", 1)]
    assert events[-1]["event"] == "done" and events[-1]["ablation"] == str(out / "ablation.md")
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)

    for name in ("config.json", "split.json", "environment.json", "ablation.md", "ablation.csv", "ablation.json"):
        assert (out / name).is_file(), name
    split = json.loads((out / "split.json").read_text())["folds"]
    assert sorted(c for f in split for c in f) == ["ph0", "ph1", "ph2", "ph3"]
    for model in ("no-hanc", "resunet"):
        rep = out / model / "report"
        for name in ("report.md", "metrics.csv", "metrics.json", "confusion_matrix.png", "per_fold_dsc.png",
                     "learning_curves.png"):
            assert (rep / name).is_file(), (model, name)
        assert len(list(rep.glob("overlay_*.png"))) in (1, 2)
        for k in (0, 1):
            assert (out / model / f"fold{k}" / "model" / "model.json").is_file()
    table = (out / "ablation.md").read_text()
    assert "| metric | structure | no-hanc | resunet |" in table and "**" in table

    # every case is predicted once, by the fold that did not train on it; beats chance
    best = 0.0
    for model in ("no-hanc", "resunet"):
        doc = json.loads((out / model / "report" / "metrics.json").read_text())
        assert sorted(doc["cases"]) == ["ph0", "ph1", "ph2", "ph3"]
        assert doc["folds"] == {c: k for k, f in enumerate(split) for c in f}
        union = doc["pooled"]["union"]["pooled"]
        total = int(np.asarray(doc["pooled"]["confusion_matrix"]["matrix"]).sum())
        chance = union["gt_voxels"] / total  # DSC of voxels labelled spine at random at the true rate
        best = max(best, union["dsc"] - chance)
    assert best > 0.1


@pytest.mark.slow
def test_cv_resume_skips_finished_folds(tmp_path, capsys):
    """A finished fold (fold.json) is not trained again on --resume; the report is rebuilt from it."""
    from spineseg.cli import main

    data = write_phantoms(tmp_path / "data", 2)
    args = ["cv", str(data), "-o", str(tmp_path / "cv"), "--folds", "2", "--models", "resunet", "--hparam",
            "width=4", "--epochs", "1", "--window", "4", "32", "32", "--windows-per-case", "2", "--batch", "2",
            "--no-n4", "--workers", "0", "--device", "cpu", "--json"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2  # not empty: refuses without --resume
    capsys.readouterr()
    assert main(args + ["--resume"]) == 0
    events = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert not [e for e in events if e["event"] in ("epoch", "fold")]
    assert events[-1]["event"] == "done"
    assert (tmp_path / "cv" / "resunet" / "report" / "report.md").is_file()


def test_ablation_combines_a_paper_preset_cv_with_default_ones(tmp_path, capsys):
    """The issue's Table 1: default-preset models and the binary paper recipe, on the same folds."""
    import shutil

    from spineseg.cli import main

    data = write_phantoms(tmp_path / "data", 4)
    common = ["--folds", "2", "--hparam", "width=4", "--epochs", "1", "--window", "4", "32", "32",
              "--windows-per-case", "2", "--batch", "2", "--no-n4", "--workers", "0", "--device", "cpu"]
    assert main(["cv", str(data), "-o", str(tmp_path / "cv-default"), "--models", "no-hanc"] + common) == 0
    assert main(["cv", str(data), "-o", str(tmp_path / "cv-paper"), "--preset", "paper", "--models", "no-hanc"]
                + common) == 0
    capsys.readouterr()
    out = tmp_path / "table"
    assert main(["ablation", str(tmp_path / "cv-default"), str(tmp_path / "cv-paper" / "no-hanc"), "-o", str(out),
                 "--json"]) == 0
    done = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert done["columns"] == ["no-hanc", "no-hanc (paper)"]
    md = (out / "ablation.md").read_text()
    assert "| metric | structure | no-hanc | no-hanc (paper) |" in md
    union = next(line for line in md.splitlines() if line.startswith("| DSC | spine (all foreground)"))
    assert "n/a" not in union  # both columns have a union DSC
    vert = next(line for line in md.splitlines() if line.startswith("| DSC | vertebra"))
    assert vert.rstrip(" |").endswith("n/a")  # the binary column has no per-class values

    # other folds: refused, one line, nothing written
    other = tmp_path / "cv-other"
    shutil.copytree(tmp_path / "cv-paper", other)
    (other / "split.json").write_text(json.dumps({"seed": 9, "folds": [["ph0", "ph3"], ["ph1", "ph2"]]}))
    split = json.loads((tmp_path / "cv-default" / "split.json").read_text())["folds"]
    if sorted(map(sorted, split)) == [["ph0", "ph3"], ["ph1", "ph2"]]:
        (other / "split.json").write_text(json.dumps({"seed": 9, "folds": [["ph0", "ph1"], ["ph2", "ph3"]]}))
    assert main(["ablation", str(tmp_path / "cv-default"), str(other), "-o", str(tmp_path / "t2")]) == 2
    err = capsys.readouterr().err
    assert "other folds" in err and not (tmp_path / "t2").exists()
