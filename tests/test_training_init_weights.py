"""train/cv --init-weights: fine-tuning starts from the saved weights, records them, and refuses what would mislead."""
from __future__ import annotations

import json

import numpy as np
import pytest

from test_training_data import write_toy_cases
from test_training_trainer import _cmd, _weights


def _parameters(run):
    """The trained parameters (the normalisation layers' running statistics move with any data, whatever the lr)."""
    return {k: v for k, v in _weights(run).items()
            if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def _train(argv, capsys):
    from spineseg.cli import main

    capsys.readouterr()
    rc = main(argv)
    return rc, capsys.readouterr().err


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """One epoch of a tiny resunet: the model the other runs start from."""
    from spineseg.cli import main

    tmp = tmp_path_factory.mktemp("init")
    data, run = write_toy_cases(tmp / "data", 4), tmp / "first"
    argv = _cmd(data, run)[3:]
    argv[argv.index("--epochs") + 1] = "1"
    assert main(argv) == 0
    return data, run, argv


def test_fine_tuning_starts_from_the_saved_weights(first_run, tmp_path, capsys):
    data, first, argv = first_run
    start = _parameters(first)
    assert len(start) > 5
    # a learning rate so small that one epoch moves no weight visibly: the result is the starting point
    tuned = tmp_path / "tuned"
    rc, err = _train([a if a != str(first) else str(tuned) for a in argv]
                     + ["--init-weights", str(first / "model"), "--lr", "1e-12"], capsys)
    assert rc == 0, err
    end = _parameters(tuned)
    assert max(float(np.abs(end[k] - start[k]).max()) for k in start) < 1e-6
    # without it the same run starts from random weights, far from the first model's
    scratch = tmp_path / "scratch"
    rc, err = _train([a if a != str(first) else str(scratch) for a in argv] + ["--lr", "1e-12", "--seed", "7"], capsys)
    assert rc == 0, err
    assert max(float(np.abs(_parameters(scratch)[k] - start[k]).max()) for k in start) > 1e-2
    # what the run started from is on record, with the hash of those weights
    recorded = json.loads((tuned / "config.json").read_text())["init_weights"]
    header = json.loads((first / "model" / "model.json").read_text())
    assert recorded == {"model": str((first / "model").resolve()), "sha256": header["weights"]["sha256"]}
    assert json.loads((tuned / "model" / "model.json").read_text())["training"]["config"]["init_weights"] == recorded


def test_a_different_network_is_refused_before_any_work(first_run, tmp_path, capsys):
    data, first, argv = first_run
    run = tmp_path / "wider"
    wider = [a if a != "width=4" else "width=8" for a in argv]
    rc, err = _train([a if a != str(first) else str(run) for a in wider] + ["--init-weights", str(first / "model")],
                     capsys)
    assert rc == 2 and "a different network (width = 4, this run 8)" in err, err
    assert len(err.strip().splitlines()) == 1 and not run.exists()


def test_validation_cases_the_model_trained_on_are_refused(first_run, tmp_path, capsys):
    """In cross-validation every case validates once, so a model trained on any of them would inflate
    the scores of its folds."""
    data, first, argv = first_run
    out = tmp_path / "cv"
    i = argv.index("--val-fraction")
    cv = argv[:i] + argv[i + 2:] + ["--folds", "2", "--init-weights", str(first / "model")]
    cv = [{"train": "cv", "--model": "--models", str(first): str(out)}.get(a, a) for a in cv]
    rc, err = _train(cv, capsys)
    assert rc == 2 and "were training cases of that model, so their scores would be inflated" in err, err
    assert not out.exists()


def test_weights_changed_since_configuring_are_refused(first_run):
    from spineseg.errors import InputError
    from spineseg.training.init_weights import load_init_weights

    _, first, _ = first_run
    with pytest.raises(InputError, match="its weights changed since the run was configured"):
        load_init_weights(object(), {"model": str(first / "model"), "sha256": "0" * 64})


def test_train_refuses_a_split_whose_validation_case_the_model_trained_on(first_run, tmp_path, capsys):
    from spineseg.training.data import train_val_split

    data, first, argv = first_run
    ids = sorted(p.name.split("_")[0] for p in data.glob("*_image.nii.gz"))
    _, first_val = train_val_split(ids, 0.25, 1)
    seed = next(s for s in range(2, 50) if train_val_split(ids, 0.25, s)[1] != first_val)
    run = tmp_path / "other-split"
    other = [a if a != str(first) else str(run) for a in argv]
    other[other.index("--seed") + 1] = str(seed)
    rc, err = _train(other + ["--init-weights", str(first / "model")], capsys)
    assert rc == 2 and "were training cases of that model" in err, err
    assert not run.exists() or not any(run.iterdir()), sorted(p.name for p in run.iterdir())
