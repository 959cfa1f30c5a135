"""``spineseg ablation CV... -o OUT``: one ablation table from several cross-validation runs.

Each CV is a ``spineseg cv`` folder (all its models) or one model's folder in it
(``RUN/<model>``). Every case must have been predicted under the same folds (``split.json``),
so the columns compare like with like; a model trained with another preset than ``default``
is labelled ``model (preset)``. A binary model (the ``paper`` preset) fills only the
spine-union row beside multi-class models.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

NAME = "ablation"
HELP = "Combine cross-validation runs (same folds) into one ablation table (DSC, PPV, sensitivity)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="CV", help="spineseg cv folders, or RUN/<model> folders in them")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="folder for ablation.md/.csv/.json")
    parser.add_argument("--title", default="", help="table title (default: 'Ablation (k-fold CV)')")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing table in OUT")
    parser.add_argument("--json", action="store_true", help="print the result as a JSON line")


def _read_json(path: Path) -> Dict[str, Any]:
    from spineseg.errors import InputError

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read it ({exc}); give a folder written by 'spineseg cv'") from None


def columns(paths: List[str]) -> List[Tuple[str, Path, List[List[str]]]]:
    """(column label, report folder, folds) for every model of every CV folder given."""
    from spineseg.errors import InputError

    out: List[Tuple[str, Path, List[List[str]]]] = []
    for arg in paths:
        p = Path(arg)
        run, only = (p, None) if (p / "split.json").is_file() else (p.parent, p.name)
        if not (run / "split.json").is_file() or not (run / "config.json").is_file():
            raise InputError(f"{p}: not a 'spineseg cv' folder (no split.json/config.json); give the CV folder")
        config = _read_json(run / "config.json")
        split = _read_json(run / "split.json")
        if not isinstance(config, dict) or not isinstance(split, dict) or not isinstance(split.get("folds"), list) \
                or not config.get("models"):
            raise InputError(f"{p}: a training run, not a 'spineseg cv' folder (its split.json has no folds); "
                             "give folders written by 'spineseg cv'")
        folds = split["folds"]
        preset = (config.get("base") or {}).get("preset", "default")
        for model in [only] if only else list(config.get("models") or []):
            report = run / model / "report"
            if not (report / "metrics.json").is_file():
                raise InputError(f"{report}: no metrics.json; finish that CV first (spineseg cv ... --resume)")
            label = model if preset == "default" else f"{model} ({preset})"
            if any(label == c[0] for c in out):
                raise InputError(f"{label} appears twice; give each model once")
            out.append((label, report, [sorted(f) for f in folds]))
    return out


def run(args: argparse.Namespace) -> int:
    from spineseg.errors import InputError
    from spineseg.metrics import pool_metrics
    from spineseg.progress import Reporter
    from spineseg.report import read_evaluation, write_ablation_report

    reporter = Reporter(json_mode=args.json, label="ablation")
    try:
        cols = columns(args.runs)
        reference = sorted(map(sorted, cols[0][2]))
        for label, _, folds in cols[1:]:
            if sorted(map(sorted, folds)) != reference:
                raise InputError(f"{label}: its CV used other folds than {cols[0][0]}; run both with the same "
                                 "data and --seed")
        pooled: Dict[str, Any] = {}
        table_classes = None
        for label, report, _ in cols:
            cases, classes, _ = read_evaluation(report)
            pooled[label] = pool_metrics(cases, classes)
            if table_classes is None or len(classes) > len(table_classes):
                table_classes = classes
        title = args.title or f"Ablation ({len(reference)}-fold CV)"
        path = write_ablation_report(Path(args.output), pooled, table_classes, title=title, overwrite=args.overwrite)
    finally:
        reporter.close()
    if args.json:
        reporter.event("done", ablation=str(path), columns=[c[0] for c in cols])
    else:
        print(f"ablation table: {path}")
    return 0
