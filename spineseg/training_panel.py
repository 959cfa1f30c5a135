"""What the SpineSeg Training panel does that needs neither Qt nor MRML.

The Slicer module (``SpineSegTraining/``) only wires widgets to these helpers, so
they are tested here with pytest:

* :class:`TrainingOptions` and :func:`build_command`: the panel's choices as a
  ``python -m spineseg train|cv ... --json`` command line, or a
  ``torchrun --nproc_per_node N -m spineseg train ...`` one (run as
  ``python -m torch.distributed.run``, the module behind the ``torchrun`` script,
  because Slicer's Python has no ``torchrun`` on its PATH) when several GPUs are chosen.
* :class:`RunMonitor`: turns the JSON lines of a run (epoch / fold / progress /
  done / error) into log lines, an overall fraction with an ETA, and loss and
  validation-DSC curves per model and fold (:class:`CurveSeries`).
* :func:`read_results`: the cross-validation table (models x DSC / PPV / sensitivity
  per structure) from a finished run folder's ``ablation.json`` or ``metrics.json``.
* :func:`find_resumable_run`, :func:`find_trained_model`: what Resume and "Use this
  model" act on (registration itself: :func:`spineseg.jobs.add_user_model`).
* :func:`headless_main`: the body of ``SpineSegTraining/Scripts/train.py``.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, TextIO, Tuple, Union

from spineseg.errors import EXIT_CANCELLED, EXIT_INPUT, EXIT_INTERNAL, EXIT_OK
from spineseg.jobs import format_eta

PathLike = Union[str, Path]

MODES = ("train", "cv")
PRESETS = ("default", "paper")
DEVICES = ("auto", "cpu", "cuda")
#: the Qt setting (a list of model folders) that SpineSeg UNet adds to its model selector
#: the architectures offered when ``spineseg.networks`` cannot be imported
FALLBACK_ARCHITECTURES = ("hybrid", "no-ux", "no-hanc", "resunet", "unetpp", "nnunet-like")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors")


def architectures() -> Tuple[str, ...]:
    """The architecture names the panel offers (``spineseg.networks`` imports no torch)."""
    try:
        from spineseg.networks import network_names
    except ImportError:
        return FALLBACK_ARCHITECTURES
    return tuple(network_names())


# --------------------------------------------------------------------------- command line
@dataclass
class TrainingOptions:
    """The panel's choices. ``None`` leaves a value to the CLI (and so to the preset)."""

    mode: str = "train"  # train | cv
    data: str = ""
    output: str = ""
    models: List[str] = field(default_factory=lambda: ["hybrid"])  # train uses models[0]
    preset: str = "default"
    epochs: Optional[int] = None
    folds: int = 5  # cv only
    batch: Optional[int] = None
    seed: Optional[int] = None
    binary: bool = False
    device: str = "auto"  # auto | cpu | cuda (with gpus)
    gpus: List[int] = field(default_factory=list)  # CUDA indices; several -> torchrun (train)
    resume: bool = False
    extra_args: List[str] = field(default_factory=list)

    def validate(self) -> None:
        """Raise ValueError with a sentence the panel can show."""
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r}: use train or cv")
        if not str(self.data).strip():
            raise ValueError("choose the dataset folder")
        if not str(self.output).strip():
            raise ValueError("choose the output (run) folder")
        if not self.models or any(not m for m in self.models):
            raise ValueError("choose an architecture")
        known = set(architectures())
        unknown = [m for m in self.models if m not in known]
        if unknown:
            raise ValueError(f"unknown architecture {unknown[0]!r}; choose one of {', '.join(sorted(known))}")
        if self.mode == "train" and len(self.models) != 1:
            raise ValueError("training takes one architecture; cross-validate to compare several")
        if self.preset not in PRESETS:
            raise ValueError(f"preset {self.preset!r}: use default or paper")
        if self.epochs is not None and int(self.epochs) < 1:
            raise ValueError(f"epochs {self.epochs}: use 1 or more")
        if self.mode == "cv" and int(self.folds) < 2:
            raise ValueError(f"folds {self.folds}: cross-validation needs 2 or more")
        if self.batch is not None and int(self.batch) < 1:
            raise ValueError(f"batch {self.batch}: use 1 or more")
        if self.device not in DEVICES:
            raise ValueError(f"device {self.device!r}: use auto, cpu or cuda")
        if any(int(g) < 0 for g in self.gpus) or len(set(self.gpus)) != len(self.gpus):
            raise ValueError(f"GPU indices {self.gpus}: use distinct indices >= 0")
        if self.gpus and self.device == "cpu":
            raise ValueError("GPU indices were chosen with device cpu; choose device cuda or auto")
        if len(self.gpus) > 1 and self.mode == "cv":
            raise ValueError("cross-validation runs on one GPU; choose one GPU index (or train on several)")

    @property
    def distributed(self) -> bool:
        return len(self.gpus) > 1

    def device_arg(self) -> str:
        if self.distributed:
            return "cuda"  # torchrun gives each process its LOCAL_RANK; CUDA_VISIBLE_DEVICES picks the GPUs
        if len(self.gpus) == 1:
            return f"cuda:{int(self.gpus[0])}"
        return self.device


def build_command(options: TrainingOptions, *, python: Optional[str] = None,
                  prefix: Optional[Sequence[str]] = None) -> List[str]:
    """The argv that runs ``options``; ``--json`` last so the panel can read the events.

    ``prefix`` replaces ``[python, "-m", "spineseg"]`` (tests use a stand-in program).
    """
    options.validate()
    py = python or sys.executable
    if prefix is not None:
        argv = [str(a) for a in prefix]
    elif options.distributed:
        argv = [py, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={len(options.gpus)}",
                "-m", "spineseg"]
    else:
        argv = [py, "-m", "spineseg"]
    argv += [options.mode, str(options.data), "-o", str(options.output)]
    if options.mode == "train":
        argv += ["--model", options.models[0]]
    else:
        argv += ["--models", ",".join(options.models), "--folds", str(int(options.folds))]
    argv += ["--preset", options.preset]
    if options.epochs is not None:
        argv += ["--epochs", str(int(options.epochs))]
    if options.batch is not None:
        argv += ["--batch", str(int(options.batch))]
    if options.seed is not None:
        argv += ["--seed", str(int(options.seed))]
    if options.binary:
        argv.append("--binary")
    argv += ["--device", options.device_arg()]
    if options.resume:
        argv.append("--resume")
    argv += [str(a) for a in options.extra_args]
    argv.append("--json")
    return argv


def child_environment(options: TrainingOptions, base: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The environment of the run: the package on PYTHONPATH (see :func:`spineseg.jobs.child_environment`)
    and, with several GPUs, ``CUDA_VISIBLE_DEVICES`` limited to them."""
    from spineseg.jobs import child_environment as base_environment

    env = base_environment(dict(os.environ if base is None else base))
    if options.distributed:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(int(g)) for g in options.gpus)
    return env


def parse_gpu_list(text: str) -> List[int]:
    """"0,1" or "0 1" -> [0, 1]; "" -> []. ValueError names the bad item."""
    out: List[int] = []
    for item in text.replace(",", " ").split():
        if not item.isdigit():
            raise ValueError(f"GPU index {item!r}: use numbers such as 0,1")
        out.append(int(item))
    return out


# --------------------------------------------------------------------------- events -> curves, progress, log
@dataclass
class CurveSeries:
    """Loss and validation DSC per epoch for one training (one model, one fold)."""

    model: str
    fold: Optional[int]
    epochs: List[int] = field(default_factory=list)
    loss: List[float] = field(default_factory=list)
    val_dsc: List[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.model if self.fold is None else f"{self.model} fold {self.fold + 1}"  # folds count from 0

    def add(self, epoch: int, loss: Optional[float], val_dsc: Optional[float]) -> None:
        """Record one epoch; a repeated epoch (after a resume) replaces the old value."""
        value_loss, value_dsc = _number(loss), _number(val_dsc)
        if epoch in self.epochs:
            i = self.epochs.index(epoch)
            self.loss[i], self.val_dsc[i] = value_loss, value_dsc
            return
        self.epochs.append(epoch)
        self.loss.append(value_loss)
        self.val_dsc.append(value_dsc)
        order = sorted(range(len(self.epochs)), key=self.epochs.__getitem__)
        self.epochs = [self.epochs[i] for i in order]
        self.loss = [self.loss[i] for i in order]
        self.val_dsc = [self.val_dsc[i] for i in order]

    def columns(self) -> Tuple[List[str], List[List[float]]]:
        """Table columns for a plot: epoch, loss, validation DSC (NaN where not measured)."""
        return ["epoch", "loss", "val_dsc"], [[float(e) for e in self.epochs], list(self.loss), list(self.val_dsc)]


def _number(value: Any) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return x if math.isfinite(x) else float("nan")


def _int(value: Any) -> Optional[int]:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class RunMonitor:
    """Follows one run's events: curves, an overall fraction (monotone) with an ETA, log lines.

    ``units`` is how many trainings the run holds (models x folds for cv, 1 for train):
    each epoch event advances the current training, a new (model, fold) starts the next.
    When the CLI sends ``progress`` events (its fraction of the whole run), they move the
    bar instead, since they also count preprocessing and validation.
    ``clock`` is injectable for tests.
    """

    def __init__(self, options: Optional[TrainingOptions] = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.options = options
        self.units = 1
        self.default_model = "model"
        if options is not None:
            self.default_model = options.models[0] if options.models else "model"
            if options.mode == "cv":
                self.units = max(1, len(options.models) * int(options.folds))
        self.clock = clock
        self.start = clock()
        self.series: Dict[Tuple[str, Optional[int]], CurveSeries] = {}
        self.fraction = 0.0
        self.last_event_eta: Optional[Tuple[float, float]] = None  # (eta_s, time received)
        self.done: Optional[Dict[str, Any]] = None
        self.error: Optional[Dict[str, Any]] = None
        self.folds_done: List[Dict[str, Any]] = []
        self.log: List[str] = []
        self.message = ""
        self.cli_progress = False  # True once the CLI sends progress events (then they alone move the bar)

    # -- feeding
    def feed(self, event: Mapping[str, Any]) -> str:
        """Take one event; returns its log line (also appended to ``log``; "" for progress events)."""
        kind = event.get("event")
        if kind == "epoch":
            line = self._epoch(event)
        elif kind == "fold":
            self.folds_done.append(dict(event))
            line = self._fold_line(event)
        elif kind == "progress":
            return self._progress(event)
        elif kind == "done":
            self.done = dict(event)
            self._advance(1.0)
            line = "Finished" + (f": model {event['model']}" if event.get("model") else "")
            report = event.get("report")
            if report:
                line += f"; report {report}"
        elif kind == "error":
            self.error = dict(event)
            line = f"Error: {event.get('message', 'unknown error')}"
        else:
            line = json.dumps(dict(event), separators=(",", ":"))
        self.log.append(line)
        return line

    def _key(self, event: Mapping[str, Any]) -> Tuple[str, Optional[int]]:
        return str(event.get("model") or self.default_model), _int(event.get("fold"))

    def _epoch(self, event: Mapping[str, Any]) -> str:
        key = self._key(event)
        if key not in self.series:
            self.series[key] = CurveSeries(*key)
        series = self.series[key]
        epoch, epochs = _int(event.get("epoch")) or 0, _int(event.get("epochs")) or 0
        series.add(epoch, event.get("loss"), event.get("val_dsc"))
        if epochs > 0 and not self.cli_progress:
            unit = list(self.series).index(key)
            self._advance((unit + min(1.0, epoch / epochs)) / self.units)
        if event.get("eta_s") is not None and self.units == 1 and not self.cli_progress:
            self.last_event_eta = (_number(event.get("eta_s")), self.clock())
        parts = [f"{series.label}: epoch {epoch}" + (f"/{epochs}" if epochs else "")]
        for name, label, fmt in (("loss", "loss", "{:.4f}"), ("val_dsc", "val DSC", "{:.3f}"),
                                 ("lr", "lr", "{:.2e}"), ("windows_per_s", "windows/s", "{:.1f}")):
            value = _number(event.get(name))
            if not math.isnan(value):
                parts.append(f"{label} {fmt.format(value)}")
        return ", ".join(parts)

    def _fold_line(self, event: Mapping[str, Any]) -> str:
        model, fold = self._key(event)
        text = f"{model} fold {fold + 1}" if fold is not None else model
        values = [f"{k} {_number(event[k]):.3f}" for k in ("dsc", "val_dsc", "mean_dsc") if k in event]
        return f"{text} finished" + (f": {', '.join(values)}" if values else "")

    def _progress(self, event: Mapping[str, Any]) -> str:
        """Progress events (the CLI's fraction of the whole run) move the bar; they are too
        frequent for the log, so they set ``message`` and return ""."""
        fraction = _number(event.get("fraction"))
        if not math.isnan(fraction):
            self.cli_progress = True
            self._advance(fraction)
        eta = _number(event.get("eta_s"))
        if not math.isnan(eta):  # the CLI's estimate for the whole run
            self.last_event_eta = (eta, self.clock())
        message = str(event.get("message") or "")
        self.message = f"{message[:1].upper()}{message[1:]}"
        return ""

    def _advance(self, fraction: float) -> None:
        self.fraction = max(self.fraction, min(1.0, max(0.0, fraction)))

    # -- reading
    def eta(self) -> Optional[float]:
        """Seconds left: the CLI's estimate (progress events: the whole run; epoch events: one
        training, used for train only), else extrapolated from the time so far (None until then)."""
        now = self.clock()
        if self.fraction >= 1.0:
            return 0.0
        if self.last_event_eta is not None and not math.isnan(self.last_event_eta[0]):
            eta, received = self.last_event_eta
            return max(0.0, eta - (now - received))
        elapsed = now - self.start
        if self.fraction <= 0.0 or elapsed <= 0.0:
            return None
        return elapsed * (1.0 - self.fraction) / self.fraction

    def status_text(self, *, message: bool = True) -> str:
        """"42% (about 3 min left)", with the latest progress message (when there is one and ``message``)."""
        eta = format_eta(self.eta()) if self.fraction < 1.0 else ""
        text = f"{100 * self.fraction:.0f}%"
        text = f"{text} ({eta})" if eta else text
        return f"{text}: {self.message}" if message and self.message and self.fraction < 1.0 else text

    def curves(self) -> List[CurveSeries]:
        return list(self.series.values())


def curves_from_lines(lines: Sequence[str], options: Optional[TrainingOptions] = None) -> RunMonitor:
    """Replay saved ``--json`` output (e.g. a run's log) into a monitor."""
    from spineseg.progress import parse_json_line

    monitor = RunMonitor(options)
    for line in lines:
        event = parse_json_line(line)
        if event is not None:
            monitor.feed(event)
    return monitor


# --------------------------------------------------------------------------- results
@dataclass
class ResultsTable:
    """The CV table: one row per metric and structure, one column per model, and the best model(s)."""

    models: List[str]
    rows: List[Dict[str, Any]]  # {"metric", "structure", "cells": [text per model], "best": [models]}
    source: Path
    report: Optional[Path] = None
    confusion: Dict[str, Path] = field(default_factory=dict)  # model -> its confusion_matrix.png

    def header(self) -> List[str]:
        return ["metric", "structure"] + self.models

    def text_rows(self) -> List[List[str]]:
        return [[r["metric"], r["structure"]] + list(r["cells"]) for r in self.rows]


def _cell(mean: Any, std: Any, digits: int = 3) -> str:
    m, s = _number(mean), _number(std)
    if math.isnan(m):
        return "n/a"
    return f"{m:.{digits}f}" if math.isnan(s) else f"{m:.{digits}f} ± {s:.{digits}f}"


def _find_file(run_dir: Path, name: str) -> Optional[Path]:
    """``run_dir/name``, else the shallowest match below it (the report may sit in a subfolder)."""
    direct = run_dir / name
    if direct.is_file():
        return direct
    found = sorted(run_dir.rglob(name), key=lambda p: (len(p.relative_to(run_dir).parts), str(p)))
    return found[0] if found else None


def read_results(run_dir: PathLike) -> Optional[ResultsTable]:
    """The results table of a finished run, or None when it has no report yet.

    Reads ``ablation.json`` (written by :func:`spineseg.report.write_ablation_report`)
    or, for a single model, the pooled summary of ``metrics.json``.
    """
    from spineseg.metrics import METRIC_LABELS

    run = Path(run_dir)
    if not run.is_dir():
        return None
    ablation = _find_file(run, "ablation.json")
    if ablation is not None:
        doc = json.loads(ablation.read_text(encoding="utf-8"))
        models = [str(m) for m in doc["models"]]
        rows = [{"metric": METRIC_LABELS.get(r["metric"], r["metric"]), "structure": r["structure"],
                 "cells": [_cell(r["values"][m]["mean"], r["values"][m]["std"]) for m in models],
                 "best": list(r.get("best", []))} for r in doc["rows"]]
        report = ablation.with_name("ablation.md")
        return ResultsTable(models, rows, ablation, report if report.is_file() else None,
                            _confusion_figures(run, models))
    metrics = _find_file(run, "metrics.json")
    if metrics is None:
        return None
    return _results_from_metrics(metrics)


def _results_from_metrics(path: Path) -> Optional[ResultsTable]:
    from spineseg.labels import ClassInfo
    from spineseg.metrics import METRIC_LABELS
    from spineseg.report import ablation_rows

    doc = json.loads(path.read_text(encoding="utf-8"))
    pooled = doc.get("pooled") or doc.get("summary")
    classes = doc.get("classes")
    if not isinstance(pooled, dict) or not isinstance(classes, list):
        return None
    extra = doc.get("extra") if isinstance(doc.get("extra"), dict) else {}
    name = str(extra.get("model") or _run_config(path.parent.parent).get("model") or path.parent.parent.name)
    rows = ablation_rows({name: pooled}, [ClassInfo.from_dict(c) for c in classes])
    table = [{"metric": METRIC_LABELS[r["metric"]], "structure": r["structure"],
              "cells": [_cell(r["values"][name]["mean"], r["values"][name]["std"])], "best": [name]} for r in rows]
    report = path.with_name("report.md")
    figure = path.with_name("confusion_matrix.png")
    return ResultsTable([name], table, path, report if report.is_file() else None,
                        {name: figure} if figure.is_file() else {})


def _confusion_figures(run: Path, models: Sequence[str]) -> Dict[str, Path]:
    """Each cross-validated model's pooled confusion matrix (``<model>/report/confusion_matrix.png``)."""
    figures = {m: run / m / "report" / "confusion_matrix.png" for m in models}
    return {m: p for m, p in figures.items() if p.is_file()}


# --------------------------------------------------------------------------- runs and models
@dataclass
class RunInfo:
    """A run folder (``spineseg train`` or ``spineseg cv`` output) the panel can resume or read.

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


def _run_config(run: Path) -> Dict[str, Any]:
    try:
        doc = json.loads((run / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _original_command(run: Path) -> List[str]:
    """The arguments after the program in environment.json's ``command``, from the sub-command on."""
    try:
        command = json.loads((run / "environment.json").read_text(encoding="utf-8")).get("command") or []
    except (OSError, ValueError, AttributeError):
        return []
    command = [str(c) for c in command]
    for i, arg in enumerate(command):
        if arg in MODES:
            return command[i:]
    return []


def run_info(run_dir: PathLike) -> Optional[RunInfo]:
    """What a run folder holds (None when it is not a run: no config.json).

    train: finished once ``model/model.json`` exists (written at the end).
    cv: finished once every model's ``<model>/report/metrics.json`` exists (and, for
    several models, ``ablation.json``); its checkpoints sit in ``<model>/fold<k>/checkpoints``.
    """
    run = Path(run_dir)
    if not (run / "config.json").is_file():
        return None
    config = _run_config(run)
    mode = "cv" if config.get("mode") == "cv" else "train"
    if mode == "cv":
        models = [str(m) for m in config.get("models") or []]
        finished = bool(models) and all((run / m / "report" / "metrics.json").is_file() for m in models) \
            and (len(models) < 2 or (run / "ablation.json").is_file())
        checkpoints = [p for p in run.glob("*/fold*/checkpoints/*") if p.suffix in CHECKPOINT_SUFFIXES]
    else:
        finished = (run / "model" / "model.json").is_file()
        checkpoints = [p for p in run.glob("checkpoints/*") if p.suffix in CHECKPOINT_SUFFIXES]
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


def resume_command(run: RunInfo, options: TrainingOptions, *, python: Optional[str] = None) -> List[str]:
    """The command that continues ``run``: its original arguments plus ``--resume`` and ``--json``.

    The CLI refuses a resume whose settings differ from the run's, so the panel's
    current choices are not used, except ``options.gpus`` (one process or torchrun):
    the hardware may change between sessions. Without a recorded command, the
    panel's options are used with ``--resume`` (the CLI then says what differs).
    """
    if not run.command:
        resumed = TrainingOptions(**{**options.__dict__, "mode": run.mode, "output": str(run.path), "resume": True})
        return build_command(resumed, python=python)
    py = python or sys.executable
    args = [a for a in run.command if a not in ("--resume", "--json")]
    if options.distributed and run.mode == "train":
        head = [py, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={len(options.gpus)}",
                "-m", "spineseg"]
    else:
        head = [py, "-m", "spineseg"]
    return head + args + ["--resume", "--json"]


def options_of_run(run: RunInfo) -> TrainingOptions:
    """The TrainingOptions a run folder was made with, as far as the monitor needs them (mode, models, folds)."""
    if run.mode == "cv":
        return TrainingOptions(mode="cv", data="-", output=str(run.path),
                               models=[str(m) for m in run.config.get("models") or []] or ["hybrid"],
                               folds=int(run.config.get("folds") or 2))
    return TrainingOptions(mode="train", data="-", output=str(run.path),
                           models=[str(run.config.get("model") or "hybrid")])


def replay_run(run: RunInfo, monitor: Optional[RunMonitor] = None) -> RunMonitor:
    """Feed a run folder's recorded epochs (``log.jsonl`` of each training) and finished folds into a monitor.

    Resume uses it so the curves keep the epochs done before the interruption; the
    panel picture uses it to show a finished run.
    """
    options = options_of_run(run)
    monitor = monitor or RunMonitor(options)
    if run.mode == "cv":
        trainings = [(m, k, run.path / m / f"fold{k}") for m in options.models for k in range(int(options.folds))]
    else:
        trainings = [(options.models[0], None, run.path)]
    for model, fold, folder in trainings:
        log = folder / "log.jsonl"
        if not log.is_file():
            continue
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short by a kill
            event = {"event": "epoch", "model": model, **({"fold": fold} if fold is not None else {}),
                     **{k: record.get(k) for k in ("epoch", "epochs", "loss", "val_dsc", "lr", "windows_per_s")}}
            monitor.feed(event)
        record_path = folder / "fold.json"
        if fold is not None and record_path.is_file():
            try:
                done = json.loads(record_path.read_text(encoding="utf-8"))
            except ValueError:
                continue
            monitor.feed({"event": "fold", "model": model, "fold": fold, "mean_dsc": done.get("mean_dsc")})
    return monitor


def find_trained_model(run_dir: PathLike, done: Optional[Mapping[str, Any]] = None) -> Optional[Path]:
    """The model a training run produced (the done event's ``model``, else ``RUN/model``); None for a
    cross-validation, whose per-fold models are for evaluation, not for use."""
    candidates = [Path(str(done["model"]))] if done and done.get("model") else []
    candidates.append(Path(run_dir) / "model")
    for path in candidates:
        try:
            header = json.loads((path / "model.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(header, dict) and header.get("format") == "spineseg-model":
            return path
    return None


# --------------------------------------------------------------------------- dataset summary
@dataclass
class DatasetSummary:
    """What the panel shows about a training folder before anything runs."""

    folder: Path
    cases: List[str]
    classes: List[int]
    problems: List[str]  # one line per problem, naming the case
    details: Dict[str, str] = field(default_factory=dict)  # case -> "size, spacing, label values"

    @property
    def ok(self) -> bool:
        return bool(self.cases) and not self.problems

    def text(self) -> str:
        lines = [f"{len(self.cases)} case(s) in {self.folder}"]
        if self.classes:
            lines.append("label values: " + ", ".join(str(v) for v in self.classes))
        lines += [f"problem: {p}" for p in self.problems]
        lines += [f"{case}: {self.details[case]}" for case in self.cases if case in self.details]
        return "\n".join(lines)


def check_dataset(folder: PathLike, allowed_values: Optional[Sequence[int]] = None):
    """Check a training folder case by case, as ``spineseg train`` will (its own discovery and checks).

    A generator, so the panel can check one case per timer tick and stay responsive:
    yields ``(fraction done, summary so far)``; the last summary is complete. A folder
    problem (no pairs, an unpaired file) ends the check with that one problem.
    """
    from spineseg.errors import InputError
    from spineseg.labels import SPINE_CLASSES
    from spineseg.training.data import find_cases, read_case

    allowed = [c.value for c in SPINE_CLASSES] if allowed_values is None else list(allowed_values)
    summary = DatasetSummary(Path(folder), [], [], [])
    try:
        cases = find_cases(folder)
    except InputError as exc:
        summary.problems.append(str(exc))
        yield 1.0, summary
        return
    summary.cases = [c.id for c in cases]
    values: set = set()
    for i, case in enumerate(cases):
        try:
            image, _, present = read_case(case, allowed)
        except InputError as exc:
            summary.problems.append(str(exc))
        else:
            values.update(present)
            size = "x".join(str(n) for n in image.GetSize())
            spacing = "x".join(f"{v:.2f}" for v in image.GetSpacing())
            summary.details[case.id] = f"{size} voxels, {spacing} mm, labels {', '.join(map(str, present))}"
        summary.classes = sorted(v for v in values if v != 0)
        yield (i + 1) / len(cases), summary


def summarize_dataset(folder: PathLike, allowed_values: Optional[Sequence[int]] = None) -> DatasetSummary:
    """:func:`check_dataset` run to the end."""
    summary = None
    for _, summary in check_dataset(folder, allowed_values):
        pass
    assert summary is not None
    return summary


# --------------------------------------------------------------------------- headless
HEADLESS_USAGE = """usage: Slicer --no-main-window --python-script SpineSegTraining/Scripts/train.py train|cv DATA -o RUN [options]

Runs `spineseg train` or `spineseg cv` (same options; see `spineseg train --help`) in a
child process and prints one line per epoch. No display is needed.
Exit codes: 0 done, 1 internal error, 2 bad input or usage, 130 cancelled (Ctrl+C / SIGTERM)."""


def headless_main(argv: Sequence[str], *, python: Optional[str] = None, prefix: Optional[Sequence[str]] = None,
                  out: Optional[TextIO] = None, err: Optional[TextIO] = None,
                  cancel: Optional[Callable[[], bool]] = None) -> int:
    """Run ``spineseg train|cv ARGS --json`` in a child process, print its events, return its exit code.

    ``argv`` is what follows the script name. The child gets ``--json`` added (unless
    given); its events become readable lines on ``out``, its errors one line on ``err``.
    """
    from spineseg.jobs import Job, child_environment as base_environment

    out = out or sys.stdout
    err = err or sys.stderr
    args = list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(HEADLESS_USAGE, file=out if args else err)
        return EXIT_OK if args else EXIT_INPUT
    if args[0] not in MODES:
        print(f"spineseg-training: error: first argument {args[0]!r}: use train or cv", file=err)
        print(HEADLESS_USAGE, file=err)
        return EXIT_INPUT
    if "--json" not in args:
        args.append("--json")
    options = None
    if args[0] == "cv":  # how many trainings the run holds, for the progress of the whole run
        models = _arg_value(args, "--models", "hybrid,no-ux,no-hanc,resunet,unetpp").split(",")
        folds = _arg_value(args, "--folds", "5")
        options = TrainingOptions(mode="cv", models=[m for m in models if m] or ["hybrid"],
                                  folds=int(folds) if folds.isdigit() else 5)
    head = list(prefix) if prefix is not None else [python or sys.executable, "-m", "spineseg"]
    job = Job(head + args, env=base_environment())
    monitor = RunMonitor(options)
    shown: List[str] = []
    try:
        job.start()
        rc = job.wait(on_event=lambda e: _print_event(monitor, e, out, shown), cancel=cancel)
    except KeyboardInterrupt:
        job.cancel()
        job.wait(timeout=10)
        print("spineseg-training: cancelled", file=err)
        return EXIT_CANCELLED
    if job.cancelled:
        print("spineseg-training: cancelled", file=err)
        return EXIT_CANCELLED
    if rc != EXIT_OK:
        message = (job.error or {}).get("message") or _last_error(job.stderr_lines)
        print(f"spineseg-training: error: {message}", file=err)
        for line in list(job.stderr_lines)[-20:]:
            print(line, file=err)
        return rc if rc in (EXIT_INPUT, EXIT_INTERNAL, EXIT_CANCELLED) else EXIT_INTERNAL
    return EXIT_OK


def _arg_value(args: Sequence[str], flag: str, default: str) -> str:
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return str(args[i + 1])
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return default


def _print_event(monitor: RunMonitor, event: Mapping[str, Any], out: TextIO, shown: List[str]) -> None:
    """One line per event; progress events only when their message changes (they come every few steps)."""
    previous = monitor.message
    line = monitor.feed(event)
    if not line:
        if not monitor.message or monitor.message == previous or monitor.message in shown[-1:]:
            return
        line = monitor.message
        shown.append(line)
    print(f"[{monitor.status_text(message=False)}] {line}", file=out, flush=True)


def _last_error(lines: Sequence[str]) -> str:
    from spineseg.jobs import error_line

    return error_line(list(lines)) or "the training process failed without a message"
