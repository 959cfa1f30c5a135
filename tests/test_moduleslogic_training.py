"""The SpineSeg Training panel's pure-Python side: command lines, event parsing, curves,
results table, run discovery, the model registry list and the headless runner."""
from __future__ import annotations

import json
import math
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from spineseg.errors import EXIT_CANCELLED, EXIT_INPUT, EXIT_INTERNAL, EXIT_OK
from spineseg.labels import SPINE_CLASSES
from spineseg.metrics import case_metrics, pool_metrics
from spineseg.modelfile import ModelHeader
from spineseg.moduleslogic import (
    dataset_check,
    headless_training,
    results_table,
    run_folder,
    run_monitor,
    training_command,
)
from spineseg.report import write_ablation_report


def _options(**kw) -> training_command.TrainingOptions:
    base = dict(mode="train", data="/data", output="/runs/r1")
    base.update(kw)
    return training_command.TrainingOptions(**base)


# --------------------------------------------------------------------------- command line
def test_train_command_single_process():
    argv = training_command.build_command(_options(epochs=3, batch=4, seed=7, binary=True, device="cpu"), python="/py")
    assert argv[:4] == ["/py", "-m", "spineseg", "train"]
    assert argv[4:7] == ["/data", "-o", "/runs/r1"]
    assert argv[argv.index("--model") + 1] == "hybrid"
    assert argv[argv.index("--preset") + 1] == "default"
    assert argv[argv.index("--epochs") + 1] == "3"
    assert argv[argv.index("--batch") + 1] == "4"
    assert argv[argv.index("--seed") + 1] == "7"
    assert argv[argv.index("--device") + 1] == "cpu"
    assert "--binary" in argv and "--resume" not in argv
    assert argv[-1] == "--json"


def test_defaults_left_to_the_preset():
    argv = training_command.build_command(_options(preset="paper"), python="/py")
    for flag in ("--epochs", "--batch", "--seed", "--binary", "--models", "--folds"):
        assert flag not in argv
    assert argv[argv.index("--preset") + 1] == "paper"


def test_cv_command_lists_models_and_folds():
    argv = training_command.build_command(_options(mode="cv", models=["hybrid", "no-ux", "unetpp"], folds=3), python="/py")
    assert argv[3] == "cv"
    assert argv[argv.index("--models") + 1] == "hybrid,no-ux,unetpp"
    assert argv[argv.index("--folds") + 1] == "3"
    assert "--model" not in argv


def test_one_gpu_index_becomes_the_device():
    argv = training_command.build_command(_options(device="cuda", gpus=[1]), python="/py")
    assert argv[:3] == ["/py", "-m", "spineseg"]
    assert argv[argv.index("--device") + 1] == "cuda:1"
    assert "CUDA_VISIBLE_DEVICES" not in training_command.training_environment(_options(gpus=[1]), base={})


def test_several_gpus_use_torchrun_and_limit_visible_devices():
    opts = _options(device="cuda", gpus=[0, 2], resume=True)
    argv = training_command.build_command(opts, python="/py")
    assert argv[:6] == ["/py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    assert argv[6:8] == ["spineseg", "train"]
    assert argv[argv.index("--device") + 1] == "cuda"
    assert "--resume" in argv and argv[-1] == "--json"
    env = training_command.training_environment(opts, base={"PYTHONPATH": "/elsewhere"})
    assert env["CUDA_VISIBLE_DEVICES"] == "0,2"
    assert env["PYTHONPATH"].split(":")[1:] == ["/elsewhere"]
    assert env["PYTHONUNBUFFERED"] == "1"


@pytest.mark.parametrize("kw, words", [
    (dict(mode="fit"), "mode"),
    (dict(data=" "), "dataset"),
    (dict(output=""), "output"),
    (dict(models=["hybridd"]), "unknown architecture"),
    (dict(models=["hybrid", "no-ux"]), "one architecture"),
    (dict(preset="best"), "preset"),
    (dict(epochs=0), "epochs"),
    (dict(mode="cv", folds=1), "folds"),
    (dict(batch=0), "batch"),
    (dict(device="tpu"), "device"),
    (dict(gpus=[0, 0]), "distinct"),
    (dict(device="cpu", gpus=[0]), "cpu"),
    (dict(mode="cv", gpus=[0, 1]), "one GPU"),
])
def test_invalid_options_say_what_to_fix(kw, words):
    with pytest.raises(ValueError, match=words):
        training_command.build_command(_options(**kw), python="/py")


def test_parse_gpu_list():
    assert training_command.parse_gpu_list("") == []
    assert training_command.parse_gpu_list("0, 1 3") == [0, 1, 3]
    with pytest.raises(ValueError, match="'x'"):
        training_command.parse_gpu_list("0,x")


# --------------------------------------------------------------------------- events
class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_train_events_build_curves_progress_and_eta():
    clock = FakeClock()
    mon = run_monitor.RunMonitor(_options(epochs=4), clock=clock)
    assert mon.eta() is None and mon.fraction == 0.0
    clock.t += 10
    line = mon.feed({"event": "epoch", "epoch": 1, "epochs": 4, "loss": 0.9, "val_dsc": 0.5, "lr": 1e-3,
                     "windows_per_s": 12.5, "eta_s": 30.0})
    assert line == "hybrid: epoch 1/4, loss 0.9000, val DSC 0.500, lr 1.00e-03, windows/s 12.5"
    assert mon.fraction == pytest.approx(0.25)
    assert mon.eta() == pytest.approx(30.0)
    clock.t += 5  # the trainer's estimate counts down between events
    assert mon.eta() == pytest.approx(25.0)
    assert mon.status_text() == "25% (about 25 s left)"
    mon.feed({"event": "epoch", "epoch": 2, "epochs": 4, "loss": 0.7, "val_dsc": None})
    (series,) = mon.curves()
    assert series.label == "hybrid" and series.epochs == [1, 2]
    assert series.loss == [0.9, 0.7]
    assert series.val_dsc[0] == 0.5 and math.isnan(series.val_dsc[1])
    names, cols = series.columns()
    assert names == ["epoch", "loss", "val_dsc"] and cols[0] == [1.0, 2.0]
    mon.feed({"event": "done", "model": "/runs/r1/model"})
    assert mon.fraction == 1.0 and mon.eta() == 0.0
    assert mon.done == {"event": "done", "model": "/runs/r1/model"}
    assert mon.log[-1] == "Finished: model /runs/r1/model"


def test_resumed_epoch_replaces_and_stays_sorted():
    s = run_monitor.CurveSeries("hybrid", None)
    s.add(2, 0.5, 0.6)
    s.add(1, 0.9, float("inf"))
    s.add(2, 0.4, 0.7)
    assert s.epochs == [1, 2] and s.loss == [0.9, 0.4]
    assert math.isnan(s.val_dsc[0]) and s.val_dsc[1] == 0.7


def test_cv_progress_runs_over_models_and_folds_and_never_goes_back():
    clock = FakeClock()
    mon = run_monitor.RunMonitor(_options(mode="cv", models=["hybrid", "no-ux"], folds=2), clock=clock)
    assert mon.units == 4
    seen = []
    for model in ("hybrid", "no-ux"):
        for fold in (0, 1):
            for epoch in (1, 2):
                clock.t += 1
                mon.feed({"event": "epoch", "model": model, "fold": fold, "epoch": epoch, "epochs": 2,
                          "loss": 1.0 / epoch, "val_dsc": 0.4 * epoch, "eta_s": 1.0})
                seen.append(mon.fraction)
            mon.feed({"event": "fold", "model": model, "fold": fold, "dsc": 0.8})
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0)
    assert seen[1] == pytest.approx(0.25)
    assert [c.label for c in mon.curves()] == ["hybrid fold 1", "hybrid fold 2", "no-ux fold 1", "no-ux fold 2"]
    assert len(mon.folds_done) == 4 and mon.log[2] == "hybrid fold 1 finished: dsc 0.800"
    # cv: the per-training eta_s is ignored, the ETA is extrapolated over the whole run
    mon2 = run_monitor.RunMonitor(_options(mode="cv", models=["hybrid"], folds=4), clock=clock)
    clock.t += 30
    mon2.feed({"event": "epoch", "fold": 0, "epoch": 1, "epochs": 1, "loss": 1.0, "eta_s": 999})
    assert mon2.fraction == pytest.approx(0.25)
    assert mon2.eta() == pytest.approx(90.0)


def test_progress_error_and_unknown_events():
    mon = run_monitor.RunMonitor(None)
    assert mon.feed({"event": "progress", "fraction": 0.5, "message": "caching cases"}) == ""
    assert mon.fraction == 0.5 and mon.log == []  # progress moves the bar, not the log
    assert mon.status_text().endswith(": Caching cases")
    mon.feed({"event": "progress", "fraction": 0.2, "message": "x"})
    assert mon.fraction == 0.5  # monotone
    mon.feed({"event": "epoch", "epoch": 1, "epochs": 1, "loss": 1.0})
    assert mon.fraction == 0.5  # with CLI progress, epochs no longer move the bar (the CLI counts more)
    mon.feed({"event": "progress", "fraction": 0.6, "eta_s": 40.0, "message": "epoch 2/3"})
    assert mon.eta() == pytest.approx(40.0, abs=1.0) and "about 40 s left" in mon.status_text()
    assert mon.feed({"event": "error", "message": "no label for case 3", "exit_code": 2}) == \
        "Error: no label for case 3"
    assert mon.error["exit_code"] == 2
    assert mon.feed({"event": "checkpoint", "path": "a"}) == '{"event":"checkpoint","path":"a"}'


def test_replay_saved_lines():
    lines = ["not json", '{"event":"epoch","epoch":1,"epochs":2,"loss":0.5,"val_dsc":0.6}', "",
             '{"event":"done","model":"m"}']
    mon = run_monitor.curves_from_lines(lines)
    assert mon.curves()[0].val_dsc == [0.6] and mon.done["model"] == "m"


# --------------------------------------------------------------------------- results
def _pooled(seed: int):
    rng = np.random.default_rng(seed)
    cases = {}
    for i in range(3):
        gt = rng.integers(0, 4, size=(4, 8, 8))
        pred = np.where(rng.random(gt.shape) < 0.8, gt, rng.integers(0, 4, size=gt.shape))
        cases[f"c{i}"] = case_metrics(pred, gt, SPINE_CLASSES)
    return pool_metrics(cases, SPINE_CLASSES)


def test_results_table_from_ablation_report(tmp_path):
    run = tmp_path / "run"
    pooled = {"hybrid": _pooled(0), "no-ux": _pooled(1)}
    write_ablation_report(run / "report", pooled, SPINE_CLASSES)
    table = results_table.read_results(run)
    assert table is not None
    assert table.models == ["hybrid", "no-ux"]
    assert table.header() == ["metric", "structure", "hybrid", "no-ux"]
    assert table.report == run / "report" / "ablation.md"
    # 3 metrics x (3 classes + union + class mean)
    assert len(table.rows) == 15
    first = table.rows[0]
    assert (first["metric"], first["structure"]) == ("DSC", "vertebra")
    s = pooled["hybrid"]["classes"]["vertebra"]
    assert first["cells"][0] == f"{s['mean']['dsc']:.3f} ± {s['std']['dsc']:.3f}"
    assert {r["metric"] for r in table.rows} == {"DSC", "PPV", "Sensitivity"}
    for r in table.rows:
        assert r["best"] and set(r["best"]) <= {"hybrid", "no-ux"}
    assert table.confusion == {}
    (run / "no-ux" / "report").mkdir(parents=True)
    (run / "no-ux" / "report" / "confusion_matrix.png").write_bytes(b"png")
    assert results_table.read_results(run).confusion == {"no-ux": run / "no-ux" / "report" / "confusion_matrix.png"}


def test_results_table_from_single_model_report(tmp_path):
    from spineseg.report import write_evaluation_report

    rng = np.random.default_rng(3)
    gt = rng.integers(0, 4, size=(3, 8, 8))
    cases = {"c0": case_metrics(gt, gt, SPINE_CLASSES), "c1": case_metrics(np.roll(gt, 1, axis=2), gt, SPINE_CLASSES)}
    # a one-model cv: <run>/<model>/report/metrics.json
    write_evaluation_report(tmp_path / "cv" / "no-hanc" / "report", cases, SPINE_CLASSES, extra={"model": "no-hanc"})
    table = results_table.read_results(tmp_path / "cv")
    assert table.models == ["no-hanc"] and len(table.rows) == 15
    assert table.report == tmp_path / "cv" / "no-hanc" / "report" / "report.md"
    assert table.confusion == {"no-hanc": tmp_path / "cv" / "no-hanc" / "report" / "confusion_matrix.png"}
    dsc = pool_metrics(cases, SPINE_CLASSES)["classes"]["vertebra"]
    assert table.rows[0]["cells"][0] == f"{dsc['mean']['dsc']:.3f} ± {dsc['std']['dsc']:.3f}"
    # a train run: <run>/validation/metrics.json, the model named by config.json
    (tmp_path / "tr").mkdir()
    (tmp_path / "tr" / "config.json").write_text(json.dumps({"model": "resunet"}))
    write_evaluation_report(tmp_path / "tr" / "validation", cases, SPINE_CLASSES)
    assert results_table.read_results(tmp_path / "tr").models == ["resunet"]


def test_no_results_yet(tmp_path):
    assert results_table.read_results(tmp_path) is None
    assert results_table.read_results(tmp_path / "missing") is None


# --------------------------------------------------------------------------- runs, models, settings
def _model_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "model.json").write_text(ModelHeader.create("m", "hybrid").to_json(), encoding="utf-8")
    return path


def _train_run(path: Path, *, checkpoint=True, finished=False, command=None) -> Path:
    (path / "checkpoints").mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model": "hybrid", "preset": "default", "epochs": 5}))
    if command is not None:
        (path / "environment.json").write_text(json.dumps({"python": "3.11", "command": command}))
    if checkpoint:
        (path / "checkpoints" / "last.pt").write_bytes(b"x")
    if finished:
        _model_dir(path / "model")
    return path


def test_train_run_info_and_latest_resumable(tmp_path):
    import os

    old = _train_run(tmp_path / "old")
    os.utime(old / "checkpoints" / "last.pt", (1000, 1000))
    new = _train_run(tmp_path / "new")
    _train_run(tmp_path / "fresh", checkpoint=False)
    (tmp_path / "notarun").mkdir()
    found = run_folder.find_resumable_run(tmp_path)
    assert found.path == new and found.mode == "train" and found.checkpoint.name == "last.pt"
    assert found.config["epochs"] == 5 and found.command == []
    _model_dir(new / "model")  # finished: it holds its model
    assert run_folder.run_info(new).finished and not run_folder.run_info(new).resumable
    assert run_folder.find_resumable_run(tmp_path).path == old
    assert run_folder.find_resumable_run(old).path == old  # the output folder may be the run itself
    assert run_folder.find_resumable_run(new) is None
    assert run_folder.find_resumable_run(tmp_path / "missing") is None
    assert run_folder.run_info(tmp_path / "notarun") is None


def test_cv_run_is_finished_when_every_report_exists(tmp_path):
    run = tmp_path / "cv"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"mode": "cv", "models": ["hybrid", "no-ux"], "folds": 2}))
    assert run_folder.run_info(run).mode == "cv" and not run_folder.run_info(run).resumable  # no checkpoint yet
    _train_run(run / "hybrid" / "fold0", finished=True)
    _train_run(run / "hybrid" / "fold1")
    info = run_folder.find_resumable_run(run)
    assert info.path == run
    assert info.checkpoint.parent.parent.parent == run / "hybrid"
    for m in ("hybrid", "no-ux"):
        (run / m / "report").mkdir(parents=True)
        (run / m / "report" / "metrics.json").write_text("{}")
    assert run_folder.find_resumable_run(run) is not None  # the ablation table is still missing
    (run / "ablation.json").write_text("{}")
    assert run_folder.run_info(run).finished and run_folder.find_resumable_run(run) is None


def test_resume_repeats_the_original_command(tmp_path):
    original = ["/x/spineseg/__main__.py", "train", "/data", "-o", str(tmp_path / "r"), "--model", "no-ux",
                "--epochs", "5", "--json"]
    run = run_folder.run_info(_train_run(tmp_path / "r", command=original))
    assert run.command == original[1:]
    panel = _options(models=["unetpp"], epochs=50)  # what the panel shows now does not matter
    argv = training_command.resume_command(run, panel, python="/py")
    assert argv == ["/py", "-m", "spineseg", "train", "/data", "-o", str(tmp_path / "r"), "--model", "no-ux",
                    "--epochs", "5", "--resume", "--json"]
    argv = training_command.resume_command(run, _options(device="cuda", gpus=[0, 1]), python="/py")
    assert argv[:6] == ["/py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    assert argv[-2:] == ["--resume", "--json"]
    # no environment.json: the panel's options with --resume, on the run's folder
    bare = run_folder.run_info(_train_run(tmp_path / "bare"))
    argv = training_command.resume_command(bare, panel, python="/py")
    assert argv[argv.index("-o") + 1] == str(tmp_path / "bare") and "--resume" in argv


def test_trained_model_of_a_train_run(tmp_path):
    run = tmp_path / "run"
    top = _model_dir(run / "model")
    other = _model_dir(tmp_path / "elsewhere")
    assert run_folder.find_trained_model(run) == top
    assert run_folder.find_trained_model(run, {"model": str(other)}) == other
    assert run_folder.find_trained_model(run, {"model": str(tmp_path / "gone")}) == top
    cv = tmp_path / "cv"
    _model_dir(cv / "hybrid" / "fold0" / "model")
    assert run_folder.find_trained_model(cv) is None  # fold models are for evaluation
    (run / "model" / "model.json").write_text("{}")
    assert run_folder.find_trained_model(run) is None


# --------------------------------------------------------------------------- dataset summary
def _pair(folder: Path, case: str, *, size=(16, 12, 3), label_size=None, label_spacing=None, values=(0, 1, 2)):
    img = sitk.GetImageFromArray(np.random.default_rng(0).random(size[::-1]).astype(np.float32))
    img.SetSpacing((0.5, 0.5, 4.0))
    lab_arr = np.zeros((label_size or size)[::-1], dtype=np.uint8)
    for i, v in enumerate(values):
        lab_arr.flat[i] = v
    lab = sitk.GetImageFromArray(lab_arr)
    lab.SetSpacing(label_spacing or (0.5, 0.5, 4.0))
    sitk.WriteImage(img, str(folder / f"{case}_image.nii.gz"))
    sitk.WriteImage(lab, str(folder / f"{case}_label.nrrd"))


def test_dataset_check_lists_cases_classes_and_problems_per_case(tmp_path):
    _pair(tmp_path, "a", values=(0, 1, 3))
    _pair(tmp_path, "b", values=(2,))
    _pair(tmp_path, "c", label_size=(16, 12, 4))
    _pair(tmp_path, "d", label_spacing=(0.5, 0.5, 3.0))
    _pair(tmp_path, "e", values=(1, 7))
    (tmp_path / "readme.txt").write_text("x")
    steps = list(dataset_check.check_dataset(tmp_path))
    assert [round(f, 2) for f, _ in steps] == [0.2, 0.4, 0.6, 0.8, 1.0]
    s = steps[-1][1]
    assert s.cases == ["a", "b", "c", "d", "e"]
    assert s.classes == [1, 2, 3]
    assert not s.ok
    assert [p.split(":")[0] for p in s.problems] == ["case c", "case d", "case e"]
    assert "size" in s.problems[0] and "spacing" in s.problems[1] and "[7]" in s.problems[2]
    text = s.text().splitlines()
    assert text[:2] == [f"5 case(s) in {tmp_path}", "label values: 1, 2, 3"]
    assert "a: 16x12x3 voxels, 0.50x0.50x4.00 mm, labels 0, 1, 3" in text
    assert dataset_check.summarize_dataset(tmp_path, allowed_values=[1, 2, 3, 7]).problems[-1].startswith("case d")


def test_dataset_folder_problems(tmp_path):
    _pair(tmp_path, "a")
    assert dataset_check.summarize_dataset(tmp_path).ok
    sitk.WriteImage(sitk.Image(4, 4, 2, sitk.sitkFloat32), str(tmp_path / "f_image.mha"))
    s = dataset_check.summarize_dataset(tmp_path)
    assert not s.ok and s.problems[0].startswith("case f: f_image.mha has no label map")
    missing = dataset_check.summarize_dataset(tmp_path / "nope")
    assert not missing.ok and "data not found" in missing.problems[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no <case>_image" in dataset_check.summarize_dataset(empty).problems[0]


def test_dataset_check_on_spider(spider_dir):
    checks = dataset_check.check_dataset(spider_dir)
    fraction, s = next(checks)  # one case is enough here: reading all 33 is too slow for a unit test
    checks.close()
    assert len(s.cases) == 33 and fraction == pytest.approx(1 / 33)
    assert not s.problems and s.classes == [1, 2, 3]


# --------------------------------------------------------------------------- headless
FAKE = textwrap.dedent("""
    import json, sys, time
    args = sys.argv[1:]
    mode = args[0]
    assert args[-1] == "--json", args
    if "--fail-input" in args:
        print(json.dumps({"event": "error", "message": "DATA: no image/label pairs", "exit_code": 2}), flush=True)
        print("spineseg: error: DATA: no image/label pairs", file=sys.stderr)
        sys.exit(2)
    if "--crash" in args:
        raise RuntimeError("boom")
    if "--hang" in args:
        print(json.dumps({"event": "epoch", "epoch": 1, "epochs": 9, "loss": 1.0}), flush=True)
        time.sleep(60)
    for f, m in ((0.1, "preprocessing a"), (0.2, "preprocessing a"), (0.3, "preprocessing b")):
        if "--no-progress" not in args:
            print(json.dumps({"event": "progress", "fraction": f, "message": m}), flush=True)
    for e in (1, 2):
        print(json.dumps({"event": "epoch", "epoch": e, "epochs": 2, "loss": 1.0 / e, "val_dsc": 0.3 * e}), flush=True)
    print("some other output", flush=True)
    print(json.dumps({"event": "done", "model": "RUN/model", "mode": mode}), flush=True)
""")


@pytest.fixture()
def fake_cli(tmp_path):
    script = tmp_path / "fake_spineseg.py"
    script.write_text(FAKE)
    return [sys.executable, str(script)]


def test_headless_success_prints_events(fake_cli, capsys):
    rc = headless_training.headless_main(["train", "DATA", "-o", "RUN"], prefix=fake_cli)
    out = capsys.readouterr().out.splitlines()
    assert rc == EXIT_OK
    assert [line.split("] ")[1] for line in out[:2]] == ["Preprocessing a", "Preprocessing b"]
    assert out[2].startswith("[30%") and out[2].endswith("] model: epoch 1/2, loss 1.0000, val DSC 0.300")
    assert out[-1].endswith("Finished: model RUN/model") and out[-1].startswith("[100%]")


@pytest.mark.parametrize("args, rc, text", [
    (["cv", "DATA", "--fail-input"], EXIT_INPUT, "error: DATA: no image/label pairs"),
    (["train", "DATA", "--crash"], EXIT_INTERNAL, "RuntimeError: boom"),
    (["fit", "DATA"], EXIT_INPUT, "use train or cv"),
    ([], EXIT_INPUT, "usage:"),
])
def test_headless_failures_exit_codes(fake_cli, capsys, args, rc, text):
    assert headless_training.headless_main(args, prefix=fake_cli) == rc
    assert text in capsys.readouterr().err


def test_headless_cv_progress_spans_models_and_folds(fake_cli, capsys):
    assert headless_training.headless_main(["cv", "DATA", "--models=a,b,c", "--folds", "2", "--no-progress"], prefix=fake_cli) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("[8%") and "epoch 1/2" in out[0]  # 1 of 2 epochs of the first of 6 trainings


def test_headless_help_and_cancel(fake_cli, capsys):
    assert headless_training.headless_main(["--help"], prefix=fake_cli) == EXIT_OK
    assert "Exit codes" in capsys.readouterr().out
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 20  # about 1 s after start

    assert headless_training.headless_main(["train", "DATA", "--hang"], prefix=fake_cli, cancel=cancel) == EXIT_CANCELLED
    assert "cancelled" in capsys.readouterr().err


def test_replay_run_keeps_earlier_epochs_for_resume(tmp_path):
    run = _train_run(tmp_path / "t")
    records = [{"epoch": e, "epochs": 3, "loss": 1.0 / e, "val_dsc": 0.2 * e, "windows": 6} for e in (1, 2)]
    (run / "log.jsonl").write_text("\n".join(json.dumps(r) for r in records) + '\n{"epoch": 3, "ep')  # killed mid-line
    mon = run_monitor.replay_run(run_folder.run_info(run))
    (series,) = mon.curves()
    assert series.label == "hybrid" and series.epochs == [1, 2] and series.val_dsc == [0.2, 0.4]
    assert mon.fraction == pytest.approx(2 / 3)
    mon.feed({"event": "epoch", "model": "hybrid", "epoch": 3, "epochs": 3, "loss": 0.3, "val_dsc": 0.7})
    assert mon.curves()[0].epochs == [1, 2, 3]

    cv = tmp_path / "cv"
    cv.mkdir()
    (cv / "config.json").write_text(json.dumps({"mode": "cv", "models": ["hybrid", "no-ux"], "folds": 2}))
    for m in ("hybrid", "no-ux"):
        for k in (0, 1):
            fold = cv / m / f"fold{k}"
            fold.mkdir(parents=True)
            (fold / "log.jsonl").write_text(json.dumps({"epoch": 1, "epochs": 1, "loss": 0.5, "val_dsc": 0.6}))
            if (m, k) != ("no-ux", 1):
                (fold / "fold.json").write_text(json.dumps({"mean_dsc": 0.6, "model": m, "fold": k}))
    mon = run_monitor.replay_run(run_folder.run_info(cv))
    assert [c.label for c in mon.curves()] == ["hybrid fold 1", "hybrid fold 2", "no-ux fold 1", "no-ux fold 2"]
    assert len(mon.folds_done) == 3 and mon.fraction == pytest.approx(1.0)
