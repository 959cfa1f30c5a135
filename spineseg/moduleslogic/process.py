"""A ``spineseg ... --json`` child process run in the background (no Qt, no MRML).

The Slicer modules launch the core in a subprocess so the GUI stays alive and Cancel
can kill it. A reader thread feeds the JSON events into a queue that a GUI timer
drains with :meth:`Job.poll`; :meth:`Job.cancel` kills the whole process tree;
:func:`failure_message` turns an unsuccessful run into one readable sentence.
"""
from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence

from spineseg.errors import EXIT_CANCELLED, EXIT_INPUT, EXIT_INTERNAL, EXIT_OK
from spineseg.progress import parse_json_line


def python_executable() -> str:
    """The Python to run the core with: Slicer's ``PythonSlicer`` when there is one, else this one."""
    return shutil.which("PythonSlicer") or sys.executable


def package_root() -> Path:
    """The folder that holds the ``spineseg`` package (goes on the child's PYTHONPATH)."""
    return Path(__file__).resolve().parents[2]


def child_environment(base: Optional[Dict[str, str]] = None, *, extra_path: Optional[Path] = None) -> Dict[str, str]:
    """A copy of ``base`` (default: this process's environment) with the package root first on PYTHONPATH.

    Inside Slicer the extension's scripts folder is on ``sys.path`` but not on the
    PYTHONPATH that a new PythonSlicer process gets, so the child could not import
    ``spineseg`` without this. Output is unbuffered so progress arrives live.
    """
    env = dict(os.environ if base is None else base)
    root = str(extra_path or package_root())
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    env["PYTHONPATH"] = os.pathsep.join([root, *parts])
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --------------------------------------------------------------------------- progress text
def format_eta(seconds: Optional[float]) -> str:
    """"about 3 s left", "about 2 min left", "less than 1 s left", or "" when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return ""
    if seconds < 1:
        return "less than 1 s left"
    if seconds < 60:
        return f"about {int(round(seconds))} s left"
    if seconds < 3600:
        return f"about {int(round(seconds / 60.0))} min left"
    return f"about {seconds / 3600.0:.1f} h left"


def progress_text(event: Dict[str, Any]) -> str:
    """One status line for a progress event: "Inference: 42% (about 3 s left)"."""
    fraction = float(event.get("fraction") or 0.0)
    message = str(event.get("message") or "Working")
    percent = int(round(100 * min(1.0, max(0.0, fraction))))
    eta = format_eta(event.get("eta_s")) if percent < 100 else ""
    text = f"{message[:1].upper()}{message[1:]}: {percent}%"
    return f"{text} ({eta})" if eta else text


# --------------------------------------------------------------------------- failures
def error_line(stderr_lines: Sequence[str]) -> str:
    """The most useful line of a child's stderr: the CLI's ``spineseg: error:`` line, else the last line."""
    lines = [ln.strip() for ln in stderr_lines if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("spineseg: error:"):
            return ln[len("spineseg: error:"):].strip()
    for ln in reversed(lines):
        if "Error" in ln.split(":", 1)[0]:  # e.g. "ModuleNotFoundError: No module named 'onnxruntime'"
            return ln
    return lines[-1] if lines else ""


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    if text and text[-1] not in ".!?":
        text += "."
    return text


def failure_message(returncode: Optional[int], *, error_event: Optional[Dict[str, Any]] = None,
                    stderr_lines: Sequence[str] = (), cancelled: bool = False, task: str = "Segmentation",
                    installer: str = "SpineSeg UNet") -> str:
    """One readable sentence for a job that did not succeed.

    ``task`` names the work ("Segmentation", "Training"); ``installer`` is the panel
    that offers to install a missing Python package.
    """
    if cancelled or returncode == EXIT_CANCELLED:
        return f"{task} was cancelled; the scene was left unchanged."
    detail = ""
    if error_event and error_event.get("message"):
        detail = str(error_event["message"])
    if not detail:
        detail = error_line(stderr_lines)
    module = detail.split("No module named", 1)[1].strip(" '\".") if "No module named" in detail else ""
    if module and not module.startswith("spineseg"):  # a missing spineseg module is a broken install: a bug
        return _sentence(f"{task} could not start: the Python package '{module}' is missing; "
                         f"install it from the {installer} panel (it offers to) or with pip")
    if returncode == EXIT_INPUT:
        return _sentence(f"{task} failed: {detail or 'bad input'}")
    if returncode is not None and returncode < 0:
        return _sentence(f"{task} stopped: the process was killed by signal {-returncode}")
    if returncode == EXIT_INTERNAL or detail:
        return _sentence(f"{task} failed with an internal error (please report it with the log)"
                         + (f": {detail}" if detail else ""))
    return _sentence(f"{task} failed with exit code {returncode}")


# --------------------------------------------------------------------------- process tree
def kill_process_tree(pid: int, *, timeout: float = 5.0, reap: Optional[Callable[[], object]] = None) -> None:
    """Stop a process and everything it started.

    POSIX: the job runs in its own session (``start_new_session``), so its process
    group is signalled: SIGTERM, then SIGKILL for whatever is left after ``timeout``.
    ``reap`` (e.g. ``Popen.poll``) collects our own child so it does not linger as a
    zombie. Windows: ``taskkill /T /F`` ends the tree.
    """
    if os.name == "nt":
        subprocess.run(["taskkill", "/PID", str(pid), "/T", "/F"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
        return
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    if pgid == os.getpgid(0):  # not a job of ours: never signal our own group
        _signal(lambda: os.kill(pid, signal.SIGTERM))
        return
    _signal(lambda: os.killpg(pgid, signal.SIGTERM))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reap is not None:
            reap()
        if not _group_exists(pgid):
            return
        time.sleep(0.05)
    _signal(lambda: os.killpg(pgid, signal.SIGKILL))
    if reap is not None:
        reap()


def _signal(send: Callable[[], None]) -> None:
    try:
        send()
    except ProcessLookupError:
        pass


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------- the job
class Job:
    """A ``spineseg ... --json`` subprocess whose events are read without blocking.

    ``start()`` launches it; ``poll()`` returns the events that arrived since the last
    call (call it from a GUI timer, or in a loop with ``wait``); ``cancel()`` kills the
    process tree. When ``finished`` is True, ``returncode``, ``done`` (the done event),
    ``error`` (the error event) and ``stderr_lines`` tell what happened.
    """

    def __init__(self, argv: Sequence[str], *, env: Optional[Dict[str, str]] = None,
                 cwd: Optional[str] = None, stderr_keep: int = 200) -> None:
        self.argv = [str(a) for a in argv]
        self.env = env
        self.cwd = cwd
        self.process: Optional[subprocess.Popen] = None
        self.returncode: Optional[int] = None
        self.cancelled = False
        self.done: Optional[Dict[str, Any]] = None
        self.error: Optional[Dict[str, Any]] = None
        self.last_progress: Optional[Dict[str, Any]] = None
        self.stdout_other: Deque[str] = deque(maxlen=stderr_keep)
        self.stderr_lines: Deque[str] = deque(maxlen=stderr_keep)
        self._events: "queue.Queue[Optional[Dict[str, Any]]]" = queue.Queue()
        self._threads: List[threading.Thread] = []
        self._stdout_closed = False
        self._exited_at: Optional[float] = None
        self.linger_s = 2.0  # how long to wait for stdout after the process ended

    def start(self) -> "Job":
        kwargs: Dict[str, Any] = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True
        self.process = subprocess.Popen(
            self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
            errors="replace", bufsize=1, **kwargs)
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for t in self._threads:
            t.start()
        return self

    def _read_stdout(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            event = parse_json_line(line)
            if event is None:
                if line.strip():
                    self.stdout_other.append(line.rstrip("\n"))
                continue
            self._events.put(event)
        self._events.put(None)  # end of stream

    def _read_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr_lines.append(line.rstrip("\n"))

    @property
    def running(self) -> bool:
        return self.process is not None and self.returncode is None

    @property
    def finished(self) -> bool:
        return self.returncode is not None

    @property
    def succeeded(self) -> bool:
        return self.returncode == EXIT_OK and not self.cancelled and self.error is None

    def poll(self) -> List[Dict[str, Any]]:
        """Events received since the last call; sets ``returncode`` once the process has ended
        and all its output has been read."""
        events = self._drain()
        if self.process is None or self.returncode is not None:
            return events
        rc = self.process.poll()
        if rc is None:
            return events
        if not self._stdout_closed:
            # the process has ended but something it started still holds stdout open:
            # give the reader a moment, then end the leftovers so the job can finish
            if self._exited_at is None:
                self._exited_at = time.monotonic()
            if time.monotonic() - self._exited_at < self.linger_s:
                return events
            if os.name != "nt":
                pgid = self.process.pid  # start_new_session: the group id is the child's pid
                _signal(lambda: os.killpg(pgid, signal.SIGKILL))
        for t in self._threads:
            t.join(timeout=2.0)
        events.extend(self._drain())
        self.returncode = rc
        return events

    def _drain(self) -> List[Dict[str, Any]]:
        events: List[Dict[str, Any]] = []
        while True:
            try:
                item = self._events.get_nowait()
            except queue.Empty:
                return events
            if item is None:  # the stdout reader reached end of stream
                self._stdout_closed = True
                continue
            kind = item.get("event")
            if kind == "progress":
                self.last_progress = item
            elif kind == "done":
                self.done = item
            elif kind == "error":
                self.error = item
            events.append(item)

    def wait(self, *, timeout: Optional[float] = None, interval: float = 0.05,
             on_event: Optional[Callable[[Dict[str, Any]], None]] = None,
             cancel: Optional[Callable[[], bool]] = None) -> int:
        """Block until the job ends (headless use); returns the exit code."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            for event in self.poll():
                if on_event is not None:
                    on_event(event)
            if self.finished:
                return int(self.returncode)  # type: ignore[arg-type]
            if cancel is not None and cancel():
                self.cancel()
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                raise TimeoutError(f"job did not finish within {timeout} s")
            time.sleep(interval)

    def cancel(self) -> None:
        """Kill the process tree; ``poll``/``wait`` then report it finished with ``cancelled`` set."""
        if self.process is None or self.process.poll() is not None:
            return
        self.cancelled = True
        kill_process_tree(self.process.pid, reap=self.process.poll)

    def failure(self, *, task: str = "Segmentation", installer: str = "SpineSeg UNet") -> str:
        """One sentence saying why the job did not succeed (wording: :func:`failure_message`)."""
        return failure_message(self.returncode, error_event=self.error, stderr_lines=list(self.stderr_lines),
                               cancelled=self.cancelled, task=task, installer=installer)
