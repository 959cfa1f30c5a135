"""Command-line options shared by ``spineseg train`` and ``spineseg cv`` -> a resolved TrainConfig.

Not a command itself (it defines no ``NAME``)."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Dict, Optional

from spineseg.errors import InputError
from spineseg.evaluation import parse_classes
from spineseg.io import refuse_input_as_output
from spineseg.modelfile import check_hparams
from spineseg.networks import build_network, resolve_hparams
from spineseg.preprocessing import PreprocessingConfig
from spineseg.progress import CancelFlag
from spineseg.training.presets import BUDGET_EPOCH_CAP, PRESETS, TrainConfig, preset_config
from spineseg.training.init_weights import init_weights_spec
from spineseg.training.run_layout import CACHE
from spineseg.training.runner import model_classes, prepare_data_once

#: share of the progress bar for checking and preprocessing the data
PREP_SHARE = 0.05


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="DATA",
                        help="folder of <case>_image.* / <case>_label.* pairs, or a dataset.json")
    parser.add_argument("-o", "--output", required=True, metavar="RUN", help="run folder to create (or --resume)")
    parser.add_argument("--preset", choices=PRESETS, default="default",
                        help="'paper': the design report's recipe (binary, MSE, Adam, 200 epochs); "
                             "'default': Dice+CE, foreground sampling, augmentation, multi-class")
    parser.add_argument("--epochs", type=int, help="number of epochs (preset: 200; with --time-budget: no limit)")
    parser.add_argument("--time-budget", type=float, metavar="MIN",
                        help="stop training after MIN minutes of wall time (validation included; per fold in cv); "
                             "warm-up and cosine decay are laid over the budget; --resume keeps its account")
    parser.add_argument("--batch", type=int, help="windows per batch and GPU (preset: 8)")
    parser.add_argument("--lr", type=float, help="base learning rate (preset: 1e-3)")
    parser.add_argument("--window", type=int, nargs=3, metavar=("D", "H", "W"), help="training window (12 128 128)")
    parser.add_argument("--windows-per-case", type=int, help="windows drawn per case and epoch")
    parser.add_argument("--cases-per-epoch", type=float, help="fraction of the cases drawn each epoch")
    parser.add_argument("--classes", metavar="SPEC",
                        help="'multiclass' (1 vertebra, 2 disc, 3 canal), 'binary', or VALUE=NAME pairs")
    parser.add_argument("--binary", action="store_true", default=None,
                        help="train one 'spine' class (union of all labels); the paper preset always does")
    parser.add_argument("--hparam", action="append", default=[], metavar="KEY=VALUE",
                        help="network hyper-parameter (JSON value), e.g. width=8; repeatable")
    parser.add_argument("--n4", dest="n4", action="store_true", default=None, help="N4 bias correction (default on)")
    parser.add_argument("--no-n4", dest="n4", action="store_false")
    parser.add_argument("--thick-slices", type=int, metavar="K",
                        help="average K consecutive slices (thick-slice simulation); 0 auto, 1 off")
    parser.add_argument("--thick-prob", type=float, metavar="P",
                        help="share of windows that are thick-slice simulated (default 1; 0.5 trains one model "
                             "for thin and thick slices)")
    parser.add_argument("--scan-aug", dest="scan_aug", action="store_true", default=None,
                        help="thick-slice and scanner augmentation (default preset: on): slice thickness 3-6 mm "
                             "with a random slice profile, in-plane resolution loss, blur, bias field, contrast, "
                             "inversion")
    parser.add_argument("--no-scan-aug", dest="scan_aug", action="store_false")
    parser.add_argument("--inplane-mm", type=float, metavar="MM",
                        help="resample the data in-plane to MM once before training (default: keep its spacing); "
                             "inference resamples to the same spacing")
    parser.add_argument("--init-weights", metavar="MODEL",
                        help="start from the weights of this model folder (fine-tuning; same --model and "
                             "--hparam values) instead of random weights, e.g. the bundled model")
    parser.add_argument("--val-every", type=int, help="validate every N epochs (default 1; always after the last)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--workers", type=int, default=None, help="data-loading worker processes (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (split, windows, initialisation)")
    parser.add_argument("--deterministic", action="store_true", default=None,
                        help="deterministic algorithms (slower; bitwise-repeatable runs on CPU)")
    parser.add_argument("--cache", metavar="DIR", help="preprocessed-data cache folder (default RUN/cache)")
    parser.add_argument("--resume", action="store_true", help="continue the run in RUN from its last checkpoint")
    parser.add_argument("--json", action="store_true", help="print JSON lines (epoch, fold, progress, done, error)")


def _hparams(items) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--hparam {item!r}: use KEY=VALUE, e.g. width=8")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def config_from_args(args: argparse.Namespace, model: str) -> TrainConfig:
    """Preset values overridden by the options the user gave; validates the model name and hparams."""
    binary: Optional[bool] = args.binary
    classes = None
    if args.classes:
        parsed, is_binary = parse_classes(args.classes)
        if is_binary:
            binary = True
        else:
            classes = [c.to_dict() for c in parsed]
    if args.preset == "paper" and binary is None:
        binary = True
    hparams = _hparams(args.hparam)
    resolve_hparams(model, hparams)  # unknown model or hyper-parameter: InputError now, not after caching
    check_hparams(hparams, "--hparam", "give a smaller positive value")
    build_network(model, out_channels=1, **hparams)  # a value no network takes (norm=foo): refused before caching
    epochs = args.epochs
    if args.time_budget is not None and epochs is None:
        epochs = BUDGET_EPOCH_CAP
    prep = PreprocessingConfig()
    if args.n4 is not None:
        prep.n4 = bool(args.n4)
    config = preset_config(
        args.preset, model=model, hparams=hparams, binary=binary, classes=classes, epochs=epochs,
        time_budget_min=args.time_budget,
        batch=args.batch, lr=args.lr, window=list(args.window) if args.window else None,
        windows_per_case=args.windows_per_case, cases_per_epoch=args.cases_per_epoch,
        thick_slices=args.thick_slices, thick_prob=args.thick_prob, inplane_mm=args.inplane_mm,
        scan_aug=args.scan_aug,
        val_every=args.val_every, workers=args.workers, seed=args.seed,
        deterministic=args.deterministic,
        preprocessing=prep.to_dict())
    if args.init_weights:
        config = config.replace(init_weights=init_weights_spec(args.init_weights, config, model_classes(config)))
    return config


def check_output_paths(args: argparse.Namespace) -> None:
    """Before any work: RUN or --cache naming the data folder would write the run into the user's data,
    and the cache must be a folder."""
    data = Path(args.data)
    refuse_input_as_output([args.output, args.cache], [data.parent if data.is_file() else data])
    cache_dir(args)


def cache_dir(args: argparse.Namespace) -> Path:
    folder = Path(args.cache) if args.cache else Path(args.output) / CACHE
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: --cache is not a folder; give a folder for the preprocessed data")
    return folder


def prepare(args: argparse.Namespace, config: TrainConfig, reporter, cancel=None) -> Dict[str, Any]:
    """Check and cache the data of ``args`` (rank 0 under torchrun), reporting on the first PREP_SHARE."""
    return prepare_data_once(args.data, config, cache_dir(args), device=args.device,
                             progress=lambda f, m: reporter(PREP_SHARE * f, m), cancel=cancel)


def cancel_flag() -> CancelFlag:
    """SIGINT/SIGTERM stop the run between steps (exit 130, the last checkpoint kept). Not under torchrun,
    where every rank must stop at the same step: there torchrun's own signal handling ends the ranks."""
    flag = CancelFlag()
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        flag.install()
    return flag
