"""``spineseg train DATA -o RUN``: train one network (single process, or one per GPU under torchrun)."""
from __future__ import annotations

import argparse
import os
import sys
from contextlib import ExitStack
from pathlib import Path

from spineseg.commands.training_args import (PREP_SHARE, add_common_arguments, cancel_flag, check_output_paths,
                                             config_from_args, prepare)
from spineseg.errors import InputError
from spineseg.progress import Reporter
from spineseg.report import REPORT_MD
from spineseg.training.data import train_val_split
from spineseg.training.run_layout import VALIDATION
from spineseg.training.run_lock import run_lock
from spineseg.training.runner import check_run_folder, run_training

NAME = "train"
HELP = "Train a segmentation network on <case>_image/<case>_label pairs; writes a model folder."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--model", default="hybrid", help="architecture (hybrid, no-ux, no-hanc, resunet, unetpp, "
                                                          "nnunet-like)")
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="share of the cases held out for validation (default 0.2; 0: none)")


def run(args: argparse.Namespace) -> int:
    reporter = Reporter(json_mode=args.json, label="train")
    main = int(os.environ.get("RANK", "0")) == 0
    held = ExitStack()  # the run folder's lock, rank 0 only, for the whole run
    cancel = cancel_flag()
    try:
        if not 0.0 <= args.val_fraction < 1.0:
            raise InputError(f"--val-fraction {args.val_fraction}: use a fraction in [0, 1)")
        config = config_from_args(args, args.model)
        run_dir = Path(args.output)
        check_output_paths(args)
        if main:
            held.enter_context(run_lock(run_dir))
            check_run_folder(run_dir, config, resume=args.resume)
        prepared = prepare(args, config, reporter, cancel)
        train_ids, val_ids = train_val_split(list(prepared["cases"]), args.val_fraction, config.seed)
        result = run_training(config, prepared["cases"], train_ids, val_ids, run_dir,
                              data_summary=prepared["summary"], device=args.device, resume=args.resume,
                              event=reporter.event, cancel=cancel,
                              progress=lambda f, m: reporter(PREP_SHARE + (1 - PREP_SHARE) * f, m),
                              command=[sys.argv[0]] + sys.argv[1:])
    finally:
        cancel.restore()
        held.close()
        reporter.close()  # errors and their JSON event: spineseg.cli
    if main:
        hist = result["history"]
        last = hist[-1] if hist else {}
        reporter.event("done", model=result["model"], run=str(run_dir), epochs=len(hist), loss=last.get("loss"),
                       val_dsc=last.get("val_dsc"),
                       report=str(run_dir / VALIDATION / REPORT_MD) if result["val_cases"] else None)
        if not args.json:
            print(f"model written to {result['model']}" + (f" (validation mean DSC {last.get('val_dsc'):.3f})"
                                                           if last.get("val_dsc") is not None else ""))
    return 0
