"""Progress reporting shared by the CLI, the Slicer modules and long-running library calls.

Library functions take an optional ``progress`` callable ``(fraction, message) -> None``
and an optional ``cancel`` callable ``() -> bool``; they never print. The CLI turns
those calls into a progress bar for people or JSON lines for programs (the Slicer
modules parse them with :func:`parse_json_line`).

JSON lines (one object per line on stdout, ``--json``)::

    {"event": "progress", "fraction": 0.42, "eta_s": 3.1, "message": "inference"}
    {"event": "epoch", "epoch": 3, "epochs": 100, "loss": 0.31, "val_dsc": 0.82, ...}
    {"event": "done", ...summary...}
    {"event": "error", "message": "...", "exit_code": 2}
"""
from __future__ import annotations

import json
import signal
import sys
import threading
import time
from typing import Any, Callable, Dict, Optional, TextIO

from spineseg.io import json_text

ProgressCallback = Callable[[float, str], None]
CancelCheck = Callable[[], bool]


class CancelFlag:
    """SIGTERM/SIGINT set a flag that long work (inference batches, training steps) checks between its
    steps, so it stops cleanly (exit 130); a second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.set = False
        self._old: Dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.set

    def _handle(self, signum, frame) -> None:
        if self.set and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.set = True

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


def json_line(event: str, **fields: Any) -> str:
    """One JSON progress line (no newline); strict JSON: an undefined metric (NaN) is null."""
    return json_text({"event": event, **fields}, indent=None, compact=True)


def parse_json_line(line: str) -> Optional[Dict[str, Any]]:
    """Parse one line of ``--json`` output; ``None`` for anything that is not an event object."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) and "event" in obj else None


class EtaClock:
    """Estimates the time left from the fraction done so far (linear extrapolation)."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def eta(self, fraction: float) -> Optional[float]:
        elapsed = time.monotonic() - self.start
        if fraction <= 0.0 or elapsed < 0.2:
            return None
        return max(0.0, elapsed * (1.0 - fraction) / fraction)


class Reporter:
    """Turns ``(fraction, message)`` calls into JSON lines or a terminal progress bar.

    Fractions are clamped to be monotone, so a consumer never sees progress go back.
    """

    def __init__(self, *, json_mode: bool = False, stream: Optional[TextIO] = None, label: str = "") -> None:
        self.json_mode = json_mode
        self.stream = stream or (sys.stdout if json_mode else sys.stderr)
        self.label = label
        self.clock = EtaClock()
        self.last = 0.0
        self._bar = None
        if not json_mode and self.stream.isatty():
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=1000, desc=label or None, file=self.stream, leave=False,
                                 bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}")
            except ImportError:
                self._bar = None

    def __call__(self, fraction: float, message: str = "") -> None:
        fraction = min(1.0, max(self.last, float(fraction)))
        if self.json_mode:
            eta = self.clock.eta(fraction)
            self.event("progress", fraction=round(fraction, 4), eta_s=None if eta is None else round(eta, 1),
                       message=message)
        elif self._bar is not None:
            self._bar.update(int(fraction * 1000) - self._bar.n)
            if message:
                self._bar.set_postfix_str(message, refresh=False)
        self.last = fraction

    def event(self, event: str, **fields: Any) -> None:
        """Emit a JSON event (only in JSON mode)."""
        if self.json_mode:
            self.stream.write(json_line(event, **fields) + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
