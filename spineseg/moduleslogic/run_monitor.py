"""A training run's JSON events as log lines, an overall fraction with an ETA, and loss and
validation-DSC curves per model and fold (:class:`CurveSeries`)."""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from spineseg.moduleslogic.process import format_eta
from spineseg.moduleslogic.run_folder import RunInfo
from spineseg.moduleslogic.training_command import TrainingOptions, options_of_run
from spineseg.moduleslogic.values import number
from spineseg.progress import parse_json_line
from spineseg.training import run_layout as layout


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
        value_loss, value_dsc = number(loss), number(val_dsc)
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
            self.last_event_eta = (number(event.get("eta_s")), self.clock())
        parts = [f"{series.label}: epoch {epoch}" + (f"/{epochs}" if epochs else "")]
        for name, label, fmt in (("loss", "loss", "{:.4f}"), ("val_dsc", "val DSC", "{:.3f}"),
                                 ("lr", "lr", "{:.2e}"), ("windows_per_s", "windows/s", "{:.1f}")):
            value = number(event.get(name))
            if not math.isnan(value):
                parts.append(f"{label} {fmt.format(value)}")
        return ", ".join(parts)

    def _fold_line(self, event: Mapping[str, Any]) -> str:
        model, fold = self._key(event)
        text = f"{model} fold {fold + 1}" if fold is not None else model
        values = [f"{k} {number(event[k]):.3f}" for k in ("dsc", "val_dsc", "mean_dsc") if k in event]
        return f"{text} finished" + (f": {', '.join(values)}" if values else "")

    def _progress(self, event: Mapping[str, Any]) -> str:
        """Progress events (the CLI's fraction of the whole run) move the bar; they are too
        frequent for the log, so they set ``message`` and return ""."""
        fraction = number(event.get("fraction"))
        if not math.isnan(fraction):
            self.cli_progress = True
            self._advance(fraction)
        eta = number(event.get("eta_s"))
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
    monitor = RunMonitor(options)
    for line in lines:
        event = parse_json_line(line)
        if event is not None:
            monitor.feed(event)
    return monitor


def replay_run(run: RunInfo, monitor: Optional[RunMonitor] = None) -> RunMonitor:
    """Feed a run folder's recorded epochs (``log.jsonl`` of each training) and finished folds into a monitor.

    Resume uses it so the curves keep the epochs done before the interruption; the
    panel picture uses it to show a finished run.
    """
    options = options_of_run(run)
    monitor = monitor or RunMonitor(options)
    if run.mode == "cv":
        trainings = [(m, k, layout.fold_dir(run.path, m, k)) for m in options.models for k in range(int(options.folds))]
    else:
        trainings = [(options.models[0], None, run.path)]
    for model, fold, folder in trainings:
        log = folder / layout.LOG
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
        record_path = folder / layout.FOLD_RECORD
        if fold is not None and record_path.is_file():
            try:
                done = json.loads(record_path.read_text(encoding="utf-8"))
            except ValueError:
                continue
            monitor.feed({"event": "fold", "model": model, "fold": fold, "mean_dsc": done.get("mean_dsc")})
    return monitor
