"""``spineseg ablation CV... -o OUT``: one ablation table from several cross-validation runs.

Each CV is a ``spineseg cv`` folder (all its models) or one model's folder in it
(``RUN/<model>``). Every case must have been predicted under the same folds (``split.json``),
so the columns compare like with like; a model trained with another preset than ``default``
is labelled ``model (preset)``. A binary model (the ``paper`` preset) fills only the
spine-union row beside multi-class models.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from spineseg.progress import Reporter
from spineseg.training.crossval import combine_cv_runs

NAME = "ablation"
HELP = "Combine cross-validation runs (same folds) into one ablation table (DSC, PPV, sensitivity)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="CV", help="spineseg cv folders, or RUN/<model> folders in them")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="folder for ablation.md/.csv/.json")
    parser.add_argument("--title", default="", help="table title (default: 'Ablation (k-fold CV)')")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing table in OUT")
    parser.add_argument("--json", action="store_true", help="print the result as a JSON line")


def run(args: argparse.Namespace) -> int:
    reporter = Reporter(json_mode=args.json, label="ablation")
    try:
        path, labels = combine_cv_runs(args.runs, Path(args.output), title=args.title, overwrite=args.overwrite)
    finally:
        reporter.close()
    if args.json:
        reporter.event("done", ablation=str(path), columns=labels)
    else:
        print(f"ablation table: {path}")
    return 0
