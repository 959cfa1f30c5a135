"""``spineseg cv DATA -o RUN --folds 5 --models hybrid,no-ux,...``: k-fold cross-validation and ablation table."""
from __future__ import annotations

import argparse
import os
import sys
from contextlib import ExitStack
from pathlib import Path

from spineseg.commands.training_args import (PREP_SHARE, add_common_arguments, cancel_flag, check_output_paths,
                                             config_from_args, prepare)
from spineseg.errors import InputError
from spineseg.networks import ABLATION_SET
from spineseg.progress import Reporter
from spineseg.training.crossval import check_cv_folder, run_cv
from spineseg.training.data import find_cases, kfold_split
from spineseg.training.init_weights import check_no_leak
from spineseg.training.run_lock import run_lock

NAME = "cv"
HELP = "k-fold cross-validation of one or more architectures; per-model reports and the ablation table."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--folds", type=int, default=5, help="number of folds (split by case; default 5)")
    parser.add_argument("--models", default=",".join(ABLATION_SET),
                        help="comma-separated architectures (default: the ablation set)")


def run(args: argparse.Namespace) -> int:
    reporter = Reporter(json_mode=args.json, label="cv")
    main = int(os.environ.get("RANK", "0")) == 0
    held = ExitStack()  # the run folder's lock, rank 0 only, for the whole run
    cancel = cancel_flag()
    try:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        if not models or len(set(models)) != len(models):
            raise InputError(f"--models {args.models!r}: give distinct architecture names, e.g. hybrid,resunet")
        configs = [config_from_args(args, m) for m in models]  # checks every name before any work
        base = configs[0]
        out = Path(args.output)
        check_output_paths(args)
        if main:
            held.enter_context(run_lock(out))
            check_cv_folder(out, base, models, args.folds, resume=args.resume)
        ids = [c.id for c in find_cases(args.data)]
        kfold_split(ids, args.folds, base.seed)  # too few cases: before any caching
        if base.init_weights:
            check_no_leak(base.init_weights, ids)  # every case validates in one fold
        prepared = prepare(args, base, reporter, cancel)
        result = run_cv(base, models, prepared["cases"], out, folds=args.folds, data_summary=prepared["summary"],
                        device=args.device, resume=args.resume, event=reporter.event, cancel=cancel,
                        progress=lambda f, m: reporter(PREP_SHARE + (1 - PREP_SHARE) * f, m),
                        command=[sys.argv[0]] + sys.argv[1:])
    finally:
        cancel.restore()
        held.close()
        reporter.close()  # errors and their JSON event: spineseg.cli
    if main:
        summary = {m: p["mean_dsc"] for m, p in result["pooled"].items()}
        reporter.event("done", run=str(out), reports=result["reports"], ablation=result["ablation"],
                       mean_dsc=summary, report=result["ablation"] or next(iter(result["reports"].values()), None))
        if not args.json:
            for m, v in summary.items():
                print(f"{m}: mean DSC {v:.3f}  report {result['reports'][m]}")
            if result["ablation"]:
                print(f"ablation table: {result['ablation']}")
    return 0
