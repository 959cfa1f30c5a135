"""k-fold cross-validation of one or several architectures, with reports and the ablation table.

Layout of a CV folder: ``config.json``, ``split.json`` (folds by case), ``environment.json``;
per model ``<model>/fold<k>/`` (a training run, see :mod:`~spineseg.training.runner`) and
``<model>/report/`` (evaluation report over all folds: every case is predicted by the fold
that did not train on it); with several models ``ablation.md/.csv/.json`` (Table 1 layout).
Finished folds are recorded in ``fold<k>/fold.json`` so ``--resume`` skips them.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from spineseg.errors import InputError
from spineseg.inference.backends import open_backend
from spineseg.io import refuse_input_as_output, write_json
from spineseg.metrics import pool_metrics
from spineseg.report import METRICS_JSON, read_evaluation, write_ablation_report, write_evaluation_report
from spineseg.training import run_layout as layout
from spineseg.training.data import CachedCase, kfold_split
from spineseg.training.presets import TrainConfig, resume_changes
from spineseg.training.runner import model_classes, resumed_config, run_training
from spineseg.training.trainer import environment_info
from spineseg.training.validation import Validator


def _fold_overlay_loader(run: Path, config: TrainConfig, case: CachedCase):
    """Overlay arrays of a case from a finished fold's saved model (used when a resumed CV skipped the fold)."""
    backend = open_backend(run / layout.MODEL, "torch", "cpu")
    keep: Dict[str, Any] = {}
    Validator({case.id: case.source()}, config, backend.info).score(backend, keep=keep)
    return keep[case.id]


def check_cv_folder(out: Path, base: TrainConfig, models: Sequence[str], folds: int, *, resume: bool) -> None:
    """A new cv needs an empty (or absent) folder; ``--resume`` needs a cv folder started with the same
    models, folds and settings (else its finished folds would be pooled with folds trained otherwise)."""
    if not resume:
        if layout.has_results(out):
            raise InputError(f"{out}: output folder is not empty; pass --resume to continue or choose a new folder")
        return
    old = resumed_config(out)
    if old.get("mode") != "cv":
        raise InputError(f"{out}: not a 'spineseg cv' run folder; resume it with the command that started it "
                         "or choose another folder")
    diff, _ = resume_changes(old.get("base") if isinstance(old.get("base"), dict) else {}, base.to_dict())
    diff += [k for k, v in (("models", list(models)), ("folds", int(folds))) if old.get(k) != v]
    if diff:
        raise InputError(f"{out}: --resume with different settings ({', '.join(sorted(diff))}) than the run was "
                         "started with; repeat the original options or start a new run folder")


def run_cv(base: TrainConfig, models: Sequence[str], cases: Dict[str, CachedCase], out_dir: os.PathLike, *,
           folds: int, data_summary: Dict[str, Any], device: str = "auto", resume: bool = False,
           event: Optional[Callable[..., None]] = None, cancel=None, progress=None,
           command: Optional[List[str]] = None) -> Dict[str, Any]:
    """Cross-validate every model in ``models``; returns {"reports": {model: path}, "ablation": path|None,
    "pooled": {model: pool_metrics}}."""
    out = Path(out_dir)
    main = int(os.environ.get("RANK", "0")) == 0
    split = kfold_split(list(cases), folds, base.seed)
    fold_of = {cid: k for k, ids in enumerate(split) for cid in ids}
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_json({"mode": "cv", "models": list(models), "folds": int(folds), "base": base.to_dict()},
                   out / layout.CONFIG, overwrite=True)
        write_json({"seed": base.seed, "folds": split}, out / layout.SPLIT, overwrite=True)
        write_json({**environment_info(), "command": command or sys.argv}, out / layout.ENVIRONMENT, overwrite=True)
    classes = model_classes(base)
    pooled: Dict[str, Any] = {}
    reports: Dict[str, str] = {}
    units = len(models) * len(split)
    for mi, model in enumerate(models):
        config = base.replace(model=model)
        all_cases: Dict[str, Dict[str, Any]] = {}
        curves: Dict[str, List[Dict[str, Any]]] = {}
        overlays: Dict[str, Any] = {}
        for k, val_ids in enumerate(split):
            run = layout.fold_dir(out, model, k)
            record = run / layout.FOLD_RECORD
            train_ids = [c for c in sorted(cases) if c not in set(val_ids)]
            unit = mi * len(split) + k

            def fold_progress(f: float, m: str, _u: int = unit) -> None:
                if progress is not None:
                    progress((_u + f) / units, f"{model} fold {k + 1}/{len(split)}: {m}")

            if resume and record.is_file():
                done = json.loads(record.read_text(encoding="utf-8"))
                all_cases.update(done["cases"])
                curves[str(k)] = done["history"]
                for cid in val_ids:
                    overlays[cid] = (lambda c=cid, r=run: _fold_overlay_loader(r, config, cases[c]))
                continue
            if run.exists() and not resume and main and any(run.iterdir()):
                raise InputError(f"{run}: fold folder is not empty; pass --resume or choose a new output folder")
            result = run_training(config, cases, train_ids, val_ids, run, data_summary=data_summary, device=device,
                                  resume=resume, event=event, cancel=cancel, progress=fold_progress,
                                  command=command, name=f"spineseg-{model}-fold{k}", fold=k, write_report=False)
            if not main:
                continue
            all_cases.update(result["val_cases"])
            curves[str(k)] = result["history"]
            for cid, arrays in result["overlays"].items():
                overlays[cid] = (lambda a=arrays: a)
            fold_pooled = pool_metrics(result["val_cases"], classes)
            write_json({"model": model, "fold": k, "cases": result["val_cases"], "history": result["history"],
                        "mean_dsc": fold_pooled["mean_dsc"]}, record, overwrite=True)
            if event is not None:
                event("fold", model=model, fold=k, folds=len(split), val_cases=len(val_ids),
                      mean_dsc=fold_pooled["mean_dsc"], dsc=fold_pooled["union"]["mean"]["dsc"],
                      model_dir=result["model"])
        if not main:
            continue
        pooled[model] = pool_metrics(all_cases, classes)
        reports[model] = str(write_evaluation_report(
            layout.model_report_dir(out, model), all_cases, classes, folds={c: fold_of[c] for c in all_cases}, curves=curves,
            overlays=lambda cid: overlays[cid](), title=f"{len(split)}-fold cross-validation: {model}",
            overwrite=True, extra={"model": model, "folds": len(split)}))
    ablation = None
    if main and len(models) > 1:
        ablation = str(write_ablation_report(out, pooled, classes, title=f"Ablation ({len(split)}-fold CV)",
                                             overwrite=True))
    return {"reports": reports, "ablation": ablation, "pooled": pooled, "split": split}


def _read_cv_json(path: Path) -> Dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read it ({exc}); give a folder written by 'spineseg cv'") from None


def cv_columns(paths: Sequence[str]) -> List[Tuple[str, Path, List[List[str]]]]:
    """(column label, report folder, folds) for every model of every CV folder given."""
    out: List[Tuple[str, Path, List[List[str]]]] = []
    for arg in paths:
        p = Path(arg)
        run, only = (p, None) if (p / layout.SPLIT).is_file() else (p.parent, p.name)
        if not (run / layout.SPLIT).is_file() or not (run / layout.CONFIG).is_file():
            raise InputError(f"{p}: not a 'spineseg cv' folder (no split.json/config.json); give the CV folder")
        config = _read_cv_json(run / layout.CONFIG)
        split = _read_cv_json(run / layout.SPLIT)
        if not isinstance(config, dict) or not isinstance(split, dict) or not isinstance(split.get("folds"), list) \
                or not config.get("models"):
            raise InputError(f"{p}: a training run, not a 'spineseg cv' folder (its split.json has no folds); "
                             "give folders written by 'spineseg cv'")
        folds = split["folds"]
        preset = (config.get("base") or {}).get("preset", "default")
        for model in [only] if only else list(config.get("models") or []):
            report = layout.model_report_dir(run, model)
            if not (report / METRICS_JSON).is_file():
                raise InputError(f"{report}: no metrics.json; finish that CV first (spineseg cv ... --resume)")
            label = model if preset == "default" else f"{model} ({preset})"
            if any(label == c[0] for c in out):
                raise InputError(f"{label} appears twice; give each model once")
            out.append((label, report, [sorted(f) for f in folds]))
    return out


def combine_cv_runs(paths: Sequence[str], out: Path, *, title: str = "", overwrite: bool = False
                    ) -> Tuple[Path, List[str]]:
    """One ablation table from several ``spineseg cv`` runs on the same folds; returns (ablation.md, columns)."""
    refuse_input_as_output([out], list(paths))
    cols = cv_columns(paths)
    refuse_input_as_output([out], [report for _, report, _ in cols])
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
    title = title or f"Ablation ({len(reference)}-fold CV)"
    path = write_ablation_report(Path(out), pooled, table_classes, title=title, overwrite=overwrite)
    return path, [c[0] for c in cols]
