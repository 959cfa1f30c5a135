"""Training loop: paper schedule, JSON lines, model output, and resume after SIGKILL (same result)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from test_training_data import write_toy_cases

ROOT = Path(__file__).resolve().parents[1]


def test_paper_preset_values_and_schedule():
    from spineseg.training.presets import lr_factor, preset_config

    cfg = preset_config("paper")
    assert cfg.window == [12, 128, 128] and cfg.cases_per_epoch == 0.4 and cfg.windows_per_case == 16
    assert cfg.batch == 8 and cfg.loss == "mse" and cfg.optimizer == "adam" and cfg.lr == 1e-3
    assert cfg.epochs == 200 and cfg.binary and cfg.flips and not cfg.intensity_aug
    assert cfg.foreground_prob == 0.0 and cfg.thick_slices == 1 and cfg.schedule == "step"
    lrs = [cfg.lr * lr_factor(cfg, e) for e in range(cfg.epochs)]
    assert lrs[0] == lrs[9] == pytest.approx(1e-3)
    assert lrs[10] == lrs[19] == pytest.approx(0.9e-3)
    assert lrs[20] == pytest.approx(0.81e-3)
    assert lrs[199] == pytest.approx(1e-3 * 0.9 ** 19)


def test_paper_schedule_matches_torch_steplr():
    import torch

    from spineseg.training.presets import lr_factor, preset_config

    cfg = preset_config("paper", epochs=35)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=cfg.lr)
    ref = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.9)
    for e in range(cfg.epochs):
        assert opt.param_groups[0]["lr"] == pytest.approx(cfg.lr * lr_factor(cfg, e))
        opt.step()
        ref.step()


def test_default_preset_is_multiclass_dicece_cosine():
    from spineseg.training.presets import lr_factor, preset_config, resolve_thick_slices

    cfg = preset_config("default")
    assert not cfg.binary and cfg.out_channels == 4 and cfg.loss == "dicece" and cfg.amp
    assert cfg.foreground_prob > 0 and cfg.intensity_aug and cfg.schedule == "cosine"
    assert resolve_thick_slices(cfg, 0.9) == 5 and resolve_thick_slices(cfg, 4.4) == 1
    assert lr_factor(cfg, cfg.epochs - 1) < 0.01 and lr_factor(cfg, cfg.warmup_epochs) == pytest.approx(1.0)


def test_paper_preset_refuses_multiclass():
    from spineseg.errors import InputError
    from spineseg.training.presets import preset_config

    with pytest.raises(InputError, match="binary"):
        preset_config("paper", binary=False)


def _cmd(data: Path, run: Path, *extra: str):
    return [sys.executable, "-m", "spineseg", "train", str(data), "-o", str(run), "--model", "resunet",
            "--hparam", "width=4", "--epochs", "3", "--window", "4", "32", "32", "--windows-per-case", "3",
            "--batch", "2", "--no-n4", "--workers", "0", "--device", "cpu", "--deterministic", "--seed", "1",
            "--val-fraction", "0.25", "--cache", str(data.parent / "cache"), "--json", *extra]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _weights(run: Path):
    from safetensors.numpy import load_file

    return load_file(str(run / "model" / "model.safetensors"))


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
    data = write_toy_cases(tmp_path / "data", 4)
    # the uninterrupted run (also warms the shared cache)
    done = subprocess.run(_cmd(data, tmp_path / "a"), env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    epochs = [e for e in events if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert all(k in epochs[0] for k in ("loss", "val_dsc", "lr", "windows_per_s", "eta_s", "epochs"))
    assert events[-1]["event"] == "done" and Path(events[-1]["model"], "model.json").is_file()

    # the same run killed with SIGKILL in the middle of epoch 2
    proc = subprocess.Popen(_cmd(data, tmp_path / "b"), env=_env(), stdout=subprocess.PIPE, text=True)
    seen_epoch1 = False
    killed = False
    for line in proc.stdout:  # type: ignore[union-attr]
        ev = json.loads(line)
        if ev["event"] == "epoch" and ev["epoch"] == 1:
            seen_epoch1 = True
        elif seen_epoch1 and ev["event"] == "progress":  # a step of epoch 2 has run
            os.kill(proc.pid, signal.SIGSTOP)  # paused mid-run, still holding its run folder
            busy = _second_run(data, tmp_path / "b")
            os.kill(proc.pid, signal.SIGKILL)
            killed = True
            break
    proc.wait(timeout=60)
    assert killed and proc.returncode == -signal.SIGKILL
    assert busy[0] == 2 and f"(pid {proc.pid} on " in busy[1] and len(busy[1].strip().splitlines()) == 1, busy
    assert (tmp_path / "b" / "run.lock").is_file()  # the killed run's lock file stays; it must not block --resume
    assert (tmp_path / "b" / "checkpoints" / "last.pt").is_file() and not (tmp_path / "b" / "model").exists()

    resumed = subprocess.run(_cmd(data, tmp_path / "b", "--resume"), env=_env(), capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    r_events = [json.loads(line) for line in resumed.stdout.splitlines() if line.startswith("{")]
    assert [e["epoch"] for e in r_events if e["event"] == "epoch"] == [2, 3]
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_allclose(wa[k], wb[k], rtol=0, atol=1e-6, err_msg=k)
    ma = json.loads((tmp_path / "a" / "model" / "model.json").read_text())["metrics"]
    mb = json.loads((tmp_path / "b" / "model" / "model.json").read_text())["metrics"]
    assert ma == mb
    log = [json.loads(x) for x in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]
    for name in ("config.json", "split.json", "environment.json"):
        assert (tmp_path / "b" / name).is_file()
    assert not (tmp_path / "b" / "run.lock").exists()


def _second_run(data: Path, run: Path):
    """A second training into ``run``, in this process (an OS lock is per open file, so this process
    contends like any other): (exit code, stderr)."""
    import contextlib
    import io

    from spineseg.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["train", str(data), "-o", str(run), "--no-n4", "--resume"])
    return rc, err.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize("fails", ["log", "checkpoint"])
def test_full_disk_during_training_keeps_the_last_checkpoint_and_resumes(tmp_path, capsys, monkeypatch, fails):
    """The disk fills after epoch 1's checkpoint, so epoch 2's log line (no space left) or checkpoint
    (64 KiB left) cannot be written: exit 2 with one line naming the free space, epoch 1's checkpoint
    intact, no temporary file and no model; once space is freed, --resume ends as the uninterrupted
    run does, with one log line per epoch. A real tmpfs where the test may mount one, else every
    write into the run folder (or its checkpoints) fails from then on (ENOSPC at fsync)."""
    import errno

    import spineseg.training.trainer as trainer
    from spineseg.cli import main
    from spineseg.modelfile import load_model
    from test_bad_input import fill_disk, mount_tmpfs

    data = write_toy_cases(tmp_path / "data", 4)
    assert main(_cmd(data, tmp_path / "a")[3:]) == 0
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = mount_tmpfs(disk, "16m")
    run = disk / "run"
    full = []
    real_save, real_fsync = trainer._save_checkpoint, os.fsync

    def save_then_fill(session, epoch):
        real_save(session, epoch)
        if epoch == 1:
            full.append(fill_disk(disk, free=0 if fails == "log" else 64 * 1024) if mounted else True)
            assert (run / "checkpoints" / "last.pt").stat().st_size > 256 * 1024  # more than 64 KiB

    failing = run if fails == "log" else run / "checkpoints"

    def fsync(fd):
        if full and not mounted and os.readlink(f"/proc/self/fd/{fd}").startswith(str(failing)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    try:
        monkeypatch.setattr(trainer, "_save_checkpoint", save_then_fill)
        monkeypatch.setattr(os, "fsync", fsync)
        capsys.readouterr()
        rc = main(_cmd(data, run)[3:])
        err = capsys.readouterr().err
        assert rc == 2 and full, err
        lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("spineseg: warning:")]
        assert len(lines) == 1 and lines[0].startswith("spineseg: error:") and " free" in lines[0], err
        assert ("log.jsonl" if fails == "log" else "last.pt") + ": cannot write file" in lines[0], err
        assert trainer.load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 1
        logged = [json.loads(x)["epoch"] for x in (run / "log.jsonl").read_text().splitlines()]
        assert logged == ([1] if fails == "log" else [1, 2])  # the log never falls behind the checkpoint
        assert not (run / "model").exists()
        left = [p.name for p in run.rglob("*") if ".tmp" in p.name or p.name.startswith(".")]
        assert not left, left

        monkeypatch.undo()
        if mounted:
            full[0].unlink()
        else:
            full.clear()
        assert main(_cmd(data, run, "--resume")[3:]) == 0, capsys.readouterr().err
        assert [json.loads(x)["epoch"] for x in (run / "log.jsonl").read_text().splitlines()] == [1, 2, 3]
        wa, wb = _weights(tmp_path / "a"), _weights(run)
        for k in wa:
            np.testing.assert_allclose(wa[k], wb[k], rtol=0, atol=1e-6, err_msg=k)
        load_model(run / "model", device="cpu")
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=20)


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_during_training_exits_130_and_resumes(tmp_path, sig):
    """Ctrl-C or a Cancel (SIGTERM to the process group, loader workers included) in epoch 2: exit 130 with
    the JSON error event, epoch 1's checkpoint kept, the run folder's lock released; --resume finishes."""
    from spineseg.training.trainer import load_checkpoint

    data, run = write_toy_cases(tmp_path / "data", 4), tmp_path / "run"
    proc = subprocess.Popen(_cmd(data, run, "--workers", "2"), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen_epoch1 = False
    for line in proc.stdout:  # type: ignore[union-attr]
        event = json.loads(line)["event"]
        seen_epoch1 = seen_epoch1 or event == "epoch"
        if seen_epoch1 and event == "progress":  # a step of epoch 2 has run: its loader workers are alive
            break
    os.killpg(proc.pid, getattr(signal, sig))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("spineseg: cancelled"), err
    last = json.loads(out.strip().splitlines()[-1])
    assert last["exit_code"] == 130 and "--resume continues" in last["message"], last
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] >= 1 and not (run / "run.lock").exists()
    resumed = subprocess.run(_cmd(data, run, "--resume"), env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert [json.loads(x)["epoch"] for x in (run / "log.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_diverged_training_writes_no_model(tmp_path, capsys):
    """A learning rate that makes the loss NaN stops the run with exit 2 and one line; no model of NaN
    weights is written (it would segment nothing, with exit 0)."""
    from spineseg.cli import main

    data, run = write_toy_cases(tmp_path / "data", 3), tmp_path / "run"
    argv = _cmd(data, run)[3:]
    argv[argv.index("--epochs") + 1] = "2"
    capsys.readouterr()
    assert main(argv + ["--lr", "1e30"]) == 2
    err = capsys.readouterr().err
    assert "training diverged in epoch 1 (loss nan; no checkpoint was written, no model)" in err, err
    assert len([ln for ln in err.splitlines() if ln.startswith("spineseg: error:")]) == 1
    assert not (run / "model").exists() and not (run / "checkpoints").exists()


def test_resume_changes_separates_what_may_differ():
    from spineseg.training.presets import resume_changes

    old = {"epochs": 3, "workers": 2, "val_overlap": 0.5}
    assert resume_changes(old, {**old}) == ([], [])
    refused, notes = resume_changes({"epochs": 3, "workers": 2}, {"epochs": 4, "workers": 0, "val_overlap": 0.5})
    assert refused == ["epochs"]
    assert [n.split(" (")[0] for n in notes] == ["--resume uses workers = 0", "--resume uses val_overlap = 0.5"]
    assert "no recorded value" in notes[1] and "started with 2" in notes[0]


def test_resume_of_a_run_written_before_val_overlap(tmp_path, capsys):
    """Run folders written before validation scored with segment's overlap hold no (or another)
    val_overlap in config.json and in the checkpoint: --resume continues them, noting the value used."""
    import torch

    from spineseg.cli import main

    data, run = write_toy_cases(tmp_path / "data", 3), tmp_path / "run"
    argv = _cmd(data, run)[3:]
    argv[argv.index("--epochs") + 1] = "1"
    assert main(argv) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["val_overlap"] == 0.5
    del config["val_overlap"]
    (run / "config.json").write_text(json.dumps(config))
    ckpt = torch.load(str(run / "checkpoints" / "last.pt"), weights_only=True)
    ckpt["config"]["val_overlap"] = 0.25
    torch.save(ckpt, str(run / "checkpoints" / "last.pt"))
    capsys.readouterr()

    assert main(argv + ["--resume"]) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "spineseg: warning: --resume uses val_overlap = 0.5 (the run started with 0.25)" in err, err
    assert json.loads((run / "config.json").read_text())["val_overlap"] == 0.5
    assert json.loads((run / "model" / "model.json").read_text())["training"]["config"]["val_overlap"] == 0.5


def test_resume_with_other_settings_is_refused(tmp_path, capsys):
    from spineseg.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"epochs": 5}))
    data = write_toy_cases(tmp_path / "data", 2)
    rc = main(["train", str(data), "-o", str(run), "--no-n4", "--epochs", "3", "--resume"])
    assert rc == 2 and "--resume with different settings" in capsys.readouterr().err


@pytest.mark.slow
def test_trained_model_loads_and_segments(tmp_path):
    """A short hybrid run writes a model that the inference engine runs on a new image."""
    import SimpleITK as sitk

    from spineseg.labels import SPINE_CLASSES
    from spineseg.modelfile import load_model, read_header
    from spineseg.preprocessing import PreprocessingConfig
    from spineseg.training.presets import preset_config
    from spineseg.training.runner import prepare_data, run_training
    from test_training_data import toy_case

    data = write_toy_cases(tmp_path / "data", 3)
    cfg = preset_config("default", model="hybrid", hparams={"width": 4}, epochs=2, window=[4, 32, 32],
                        windows_per_case=2, batch=2, workers=0, preprocessing=PreprocessingConfig(n4=False).to_dict())
    prepared = prepare_data(data, cfg, tmp_path / "cache")
    lines = []
    result = run_training(cfg, prepared["cases"], ["case00", "case01"], ["case02"], tmp_path / "run",
                          data_summary=prepared["summary"], device="cpu", event=lambda e, **f: lines.append((e, f)))
    header = read_header(result["model"])
    assert header.task == "multiclass" and [c.name for c in header.classes] == [c.name for c in SPINE_CLASSES]
    assert list(header.window) == [4, 32, 32] and header.spacing[0] == pytest.approx(4.4)
    assert header.training["epochs"] == 2 and header.training["validation_cases"] == ["case02"]
    assert "validation" in header.metrics and header.preprocessing["n4"] is False
    assert load_model(result["model"]).network.spec["name"] == "hybrid"
    assert [f["epoch"] for e, f in lines if e == "epoch"] == [1, 2]
    assert (tmp_path / "run" / "validation" / "report.md").is_file()

    from spineseg.inference import segment_image
    from spineseg.inference.engine import InferenceOptions

    image, _ = toy_case(9)
    seg = segment_image(image, result["model"], options=InferenceOptions(device="cpu"))
    assert seg.label.GetSize() == image.GetSize()
    assert set(np.unique(sitk.GetArrayFromImage(seg.label))) <= {0, 1, 2, 3}
