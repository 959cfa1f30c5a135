"""What a run folder (``spineseg train`` or ``spineseg cv`` output) holds: Resume and
"Use this model" act on it. File names: :mod:`spineseg.training.run_layout`."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from spineseg.modelfile import HEADER_FILE
from spineseg.moduleslogic.model_registry import is_model_dir
from spineseg.report import ABLATION_FILES, METRICS_JSON
from spineseg.training import run_layout as layout

PathLike = Union[str, Path]
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors")
#: the sub-commands that make a run folder (the first of them in a recorded command line)
RUN_COMMANDS = ("train", "cv")


@dataclass
class RunInfo:
    """A run folder the panel can resume or read.

    ``command`` is the original argument list from ``environment.json`` (without the
    program), so a resume repeats the options the run was started with, as the CLI requires.
    """

    path: Path
    mode: str  # train | cv
    config: Dict[str, Any]
    command: List[str]
    checkpoint: Optional[Path]
    finished: bool

    @property
    def resumable(self) -> bool:
        return self.checkpoint is not None and not self.finished


def run_config(run: Path) -> Dict[str, Any]:
    """The run's ``config.json`` ({} when missing or unreadable)."""
    try:
        doc = json.loads((run / layout.CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _original_command(run: Path) -> List[str]:
    """The arguments after the program in environment.json's ``command``, from the sub-command on."""
    try:
        command = json.loads((run / layout.ENVIRONMENT).read_text(encoding="utf-8")).get("command") or []
    except (OSError, ValueError, AttributeError):
        return []
    command = [str(c) for c in command]
    for i, arg in enumerate(command):
        if arg in RUN_COMMANDS:
            return command[i:]
    return []


def run_info(run_dir: PathLike) -> Optional[RunInfo]:
    """What a run folder holds (None when it is not a run: no config.json).

    train: finished once ``model/model.json`` exists (written at the end).
    cv: finished once every model's ``<model>/report/metrics.json`` exists (and, for
    several models, ``ablation.json``); its checkpoints sit in ``<model>/fold<k>/checkpoints``.
    """
    run = Path(run_dir)
    if not (run / layout.CONFIG).is_file():
        return None
    config = run_config(run)
    mode = "cv" if config.get("mode") == "cv" else "train"
    if mode == "cv":
        models = [str(m) for m in config.get("models") or []]
        finished = bool(models) and all((layout.model_report_dir(run, m) / METRICS_JSON).is_file() for m in models) \
            and (len(models) < 2 or (run / ABLATION_FILES["json"]).is_file())
        checkpoints = [p for p in run.glob(f"*/fold*/{layout.CHECKPOINTS}/*") if p.suffix in CHECKPOINT_SUFFIXES]
    else:
        finished = (run / layout.MODEL / HEADER_FILE).is_file()
        checkpoints = [p for p in run.glob(f"{layout.CHECKPOINTS}/*") if p.suffix in CHECKPOINT_SUFFIXES]
    checkpoints = sorted((p for p in checkpoints if p.is_file()), key=lambda p: p.stat().st_mtime)
    return RunInfo(run, mode, config, _original_command(run), checkpoints[-1] if checkpoints else None, finished)


def find_resumable_run(folder: PathLike) -> Optional[RunInfo]:
    """The most recently checkpointed unfinished run: ``folder`` itself or one of its sub-folders."""
    root = Path(folder)
    if not root.is_dir():
        return None
    here = run_info(root)
    candidates = [here] if here is not None else [run_info(p) for p in sorted(root.iterdir()) if p.is_dir()]
    runs = [r for r in candidates if r is not None and r.resumable]
    if not runs:
        return None
    return max(runs, key=lambda r: r.checkpoint.stat().st_mtime)  # type: ignore[union-attr]


def find_trained_model(run_dir: PathLike, done: Optional[Mapping[str, Any]] = None) -> Optional[Path]:
    """The model a training run produced (the done event's ``model``, else ``RUN/model``); None for a
    cross-validation, whose per-fold models are for evaluation, not for use."""
    candidates = [Path(str(done["model"]))] if done and done.get("model") else []
    candidates.append(Path(run_dir) / layout.MODEL)
    return next((p for p in candidates if is_model_dir(p)), None)
