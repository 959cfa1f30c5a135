"""The body of ``SpineSegTraining/Scripts/train.py``: ``spineseg train|cv`` in a child process,
one readable line per event, no display needed."""
from __future__ import annotations

import sys
from typing import Any, Callable, List, Mapping, Optional, Sequence, TextIO

from spineseg.errors import EXIT_CANCELLED, EXIT_INPUT, EXIT_INTERNAL, EXIT_OK
from spineseg.moduleslogic.process import Job, child_environment, error_line
from spineseg.moduleslogic.run_monitor import RunMonitor
from spineseg.moduleslogic.training_command import MODES, options_of_command, spineseg_prefix

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
    head = list(prefix) if prefix is not None else spineseg_prefix(python)
    job = Job(head + args, env=child_environment())
    monitor = RunMonitor(options_of_command(args))  # a cv run's progress counts all its trainings
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
        message = (job.error or {}).get("message") or error_line(list(job.stderr_lines)) \
            or "the training process failed without a message"
        print(f"spineseg-training: error: {message}", file=err)
        for line in list(job.stderr_lines)[-20:]:
            print(line, file=err)
        return rc if rc in (EXIT_INPUT, EXIT_INTERNAL, EXIT_CANCELLED) else EXIT_INTERNAL
    return EXIT_OK


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
