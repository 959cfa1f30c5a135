"""The names of what ``spineseg train`` and ``spineseg cv`` write into a run folder.

One home for them: the runner and cross-validation write these paths, and the
training panel's logic (:mod:`spineseg.moduleslogic.run_folder`) reads them back.

A train run: ``config.json`` (the resolved configuration), ``split.json``,
``environment.json`` (versions, GPUs, the command), ``log.jsonl`` (one line per epoch),
``checkpoints/last.pt``, ``model/`` (the trained model) and ``validation/`` (the report
of the validation cases). A cv run: ``config.json``, ``split.json``,
``environment.json``; per model ``<model>/fold<k>/`` (a train run plus ``fold.json``
once the fold is finished) and ``<model>/report/``; with several models
``ablation.json`` / ``.md`` / ``.csv``. While a train or cv runs, ``run.lock`` names it.
"""
from __future__ import annotations

from pathlib import Path

CONFIG = "config.json"
SPLIT = "split.json"
ENVIRONMENT = "environment.json"
LOG = "log.jsonl"
CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = "last.pt"
MODEL = "model"
VALIDATION = "validation"
CACHE = "cache"
FOLD_RECORD = "fold.json"
REPORT = "report"
#: held by a running train/cv (spineseg.training.run_lock); not counted when a folder is checked for emptiness
LOCK = "run.lock"


def fold_dir(run: Path, model: str, fold: int) -> Path:
    """The training run of one fold of one model in a cv run."""
    return Path(run) / model / f"fold{fold}"


def model_report_dir(run: Path, model: str) -> Path:
    """The report over all folds of one model in a cv run."""
    return Path(run) / model / REPORT


def has_results(run: Path) -> bool:
    """Whether ``run`` holds anything of a run (the data cache and the lock file do not count)."""
    run = Path(run)
    return run.is_dir() and any(p.name not in (CACHE, LOCK) for p in run.iterdir())


def last_checkpoint(run: Path) -> Path:
    return Path(run) / CHECKPOINTS / LAST_CHECKPOINT
