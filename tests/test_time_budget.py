"""``--time-budget``: training stops on the wall clock, the lr schedule spans the budget, resume keeps the account."""
from __future__ import annotations

import time

import pytest

from test_training_data import write_toy_cases


def test_budget_schedule_warms_up_then_anneals_to_zero():
    from spineseg.training.presets import BUDGET_WARMUP_FRACTION, budget_lr_factor, preset_config

    cfg = preset_config("default", time_budget_min=10.0)
    w = BUDGET_WARMUP_FRACTION
    assert budget_lr_factor(cfg, 0, 0.0) == 0.0
    assert budget_lr_factor(cfg, 0, w / 2) == pytest.approx(0.5)
    assert budget_lr_factor(cfg, 0, w) == pytest.approx(1.0)
    assert budget_lr_factor(cfg, 3, 0.5 + w / 2) == pytest.approx(0.5)  # cosine midpoint
    assert budget_lr_factor(cfg, 0, 1.0) == pytest.approx(0.0, abs=1e-12)
    assert budget_lr_factor(cfg, 0, 1.7) == pytest.approx(0.0, abs=1e-12)
    fs = [budget_lr_factor(cfg, 0, t / 100) for t in range(int(w * 100), 101)]
    assert all(a >= b for a, b in zip(fs, fs[1:]))
    paper = preset_config("paper", time_budget_min=10.0)  # step decay stays per epoch
    assert budget_lr_factor(paper, 25, 0.9) == pytest.approx(0.9 ** 2)


def test_time_budget_option_lifts_the_epoch_cap_and_is_checked(capsys):
    import argparse

    from spineseg.cli import main
    from spineseg.commands.training_args import add_common_arguments, config_from_args
    from spineseg.training.presets import BUDGET_EPOCH_CAP

    parser = argparse.ArgumentParser()
    add_common_arguments(parser)
    cfg = config_from_args(parser.parse_args(["d", "-o", "r", "--time-budget", "75"]), "hybrid")
    assert cfg.time_budget_min == 75.0 and cfg.epochs == BUDGET_EPOCH_CAP
    cfg = config_from_args(parser.parse_args(["d", "-o", "r", "--time-budget", "5", "--epochs", "3"]), "hybrid")
    assert cfg.epochs == 3
    assert config_from_args(parser.parse_args(["d", "-o", "r"]), "hybrid").time_budget_min is None
    rc = main(["train", "nowhere", "-o", "run", "--time-budget", "0"])
    assert rc == 2 and "--time-budget 0" in capsys.readouterr().err


def _setup(tmp_path, budget_min: float):
    from spineseg.preprocessing import PreprocessingConfig
    from spineseg.training.presets import preset_config
    from spineseg.inference.backends import ModelInfo
    from spineseg.training.runner import build_header, model_classes, model_spacing, prepare_data
    from spineseg.training.validation import Validator

    data = write_toy_cases(tmp_path / "data", 3)
    cfg = preset_config("default", model="resunet", hparams={"width": 4}, epochs=100000, window=[4, 32, 32],
                        windows_per_case=2, batch=2, workers=0, time_budget_min=budget_min,
                        preprocessing=PreprocessingConfig(n4=False).to_dict())
    cases = prepare_data(data, cfg, tmp_path / "cache")["cases"]
    train_cases = {c: cases[c] for c in ("case00", "case01")}
    spacing = model_spacing(list(train_cases.values()), cfg)
    header = build_header(cfg, model_classes(cfg), None, name="t", spacing=spacing, metrics={}, training={})
    validator = Validator({"case02": cases["case02"].source()}, cfg, ModelInfo(tmp_path / "run" / "model", header))
    return cfg, train_cases, validator, model_classes(cfg)


@pytest.mark.slow
def test_training_stops_on_the_clock_and_resume_spends_only_what_is_left(tmp_path):
    from spineseg.errors import Cancelled
    from spineseg.training.trainer import load_checkpoint, train

    import monai.losses  # noqa: F401 - imported here (seconds), so that the clock measures training
    import torch

    import spineseg.networks  # noqa: F401

    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])  # the first optimiser imports torch._dynamo

    budget_s = 12.0
    cfg, train_cases, validator, classes = _setup(tmp_path, budget_s / 60.0)
    run = tmp_path / "run"

    # first call: cancelled (as a killed run) after about half the budget
    t0 = time.monotonic()
    with pytest.raises(Cancelled):
        train(cfg, train_cases, validator, run, classes, device="cpu", tensorboard=False,
              cancel=lambda: time.monotonic() - t0 > budget_s / 2)
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    spent, epochs_done = float(ckpt["seconds"]), int(ckpt["epoch"])
    assert 0 < spent < budget_s and epochs_done >= 1

    # resumed: trains only the rest of the budget, then stops between steps and validates the final weights
    t1 = time.monotonic()
    result = train(cfg, train_cases, validator, run, classes, device="cpu", resume=True, tensorboard=False)
    resumed_s = time.monotonic() - t1
    assert budget_s <= result.seconds < budget_s + 5.0
    assert resumed_s < budget_s - spent + 4.0  # a resume that restarted the clock would take the whole budget
    assert result.history[-1]["epoch"] > epochs_done and result.history[-1]["epoch"] < cfg.epochs
    assert set(result.val_cases) == {"case02"}
    lrs = [r["lr"] for r in result.history]  # each epoch's last step
    assert lrs[-1] < 0.3 * cfg.lr  # annealed over the budget (over 100000 epochs it would still be ~1e-3)
    # the budget, not the 100000-epoch cap, gives the ETA: nothing left at the end (an epoch may end a few
    # milliseconds before the budget does, and the run stops at the next check)
    assert result.history[-1]["eta_s"] < 0.5

    # resumed again with the budget spent: no more training, the same weights are validated
    again = train(cfg, train_cases, validator, run, classes, device="cpu", resume=True, tensorboard=False)
    assert len(again.history) == len(result.history) and again.windows == result.windows
    assert again.val_cases == {}  # run_training validates the final weights itself


def test_a_budget_shorter_than_the_set_up_still_trains_one_step(tmp_path):
    from spineseg.training.trainer import train

    cfg, train_cases, validator, classes = _setup(tmp_path, 1e-6)
    result = train(cfg, train_cases, validator, tmp_path / "run", classes, device="cpu", tensorboard=False)
    assert len(result.history) == 1 and result.windows == cfg.batch and set(result.val_cases) == {"case02"}
