"""Run ``python -m spineseg segment ... --json`` as a background job (no Qt, no MRML).

The Slicer module launches the core in a subprocess so the GUI stays alive and
Cancel can kill it. Everything about that process that does not need Slicer lives
here and is tested with pytest: building the command line, reading the JSON
progress lines without blocking (a reader thread feeds a queue that a GUI timer
drains with :meth:`Job.poll`), killing the whole process tree, turning a failure
into one readable sentence, and finding which Python packages are missing.
"""
from __future__ import annotations

import importlib.util
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Union

from spineseg.errors import EXIT_CANCELLED, EXIT_INPUT, EXIT_INTERNAL, EXIT_OK
from spineseg.progress import parse_json_line

DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("onnx", "torch")


# --------------------------------------------------------------------------- command line
@dataclass
class SegmentOptions:
    """The ``spineseg segment`` options the Slicer panel exposes (None: the CLI's default)."""

    model: Optional[str] = None  # model folder; None: the bundled default model
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    backend: str = "onnx"  # onnx | torch
    n4: Optional[bool] = None  # None: what the model header says
    n4_shrink: Optional[int] = None
    overwrite: bool = False
    extra_args: List[str] = field(default_factory=list)  # further CLI options, passed as given

    def validate(self) -> None:
        dev = self.device
        if not (dev in DEVICES or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise ValueError(f"device {dev!r}: use auto, cpu, cuda or cuda:N")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend {self.backend!r}: use onnx or torch")
        if self.n4_shrink is not None and int(self.n4_shrink) < 1:
            raise ValueError(f"N4 shrink factor {self.n4_shrink}: use an integer >= 1")


def segment_command(python: str, inputs: Sequence[str], output: str, options: SegmentOptions) -> List[str]:
    """The argv for ``<python> -m spineseg segment INPUT... -o OUTPUT [options] --json``."""
    options.validate()
    if not inputs:
        raise ValueError("no input image to segment")
    argv = [python, "-m", "spineseg", "segment", *[str(p) for p in inputs], "-o", str(output)]
    if options.model:
        argv += ["--model", str(options.model)]
    argv += ["--device", options.device, "--backend", options.backend]
    if options.n4 is not None:
        argv.append("--n4" if options.n4 else "--no-n4")
    if options.n4_shrink is not None:
        argv += ["--n4-shrink", str(int(options.n4_shrink))]
    if options.overwrite:
        argv.append("--overwrite")
    argv += list(options.extra_args)
    argv.append("--json")
    return argv


def python_executable() -> str:
    """The Python to run the core with: Slicer's ``PythonSlicer`` when there is one, else this one."""
    import shutil

    return shutil.which("PythonSlicer") or sys.executable


def package_root() -> Path:
    """The folder that holds the ``spineseg`` package (goes on the child's PYTHONPATH)."""
    return Path(__file__).resolve().parent.parent


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
                    stderr_lines: Sequence[str] = (), cancelled: bool = False) -> str:
    """One readable sentence for a job that did not succeed."""
    if cancelled or returncode == EXIT_CANCELLED:
        return "Segmentation was cancelled; the scene was left unchanged."
    detail = ""
    if error_event and error_event.get("message"):
        detail = str(error_event["message"])
    if not detail:
        detail = error_line(stderr_lines)
    module = detail.split("No module named", 1)[1].strip(" '\".") if "No module named" in detail else ""
    if module and not module.startswith("spineseg"):  # a missing spineseg module is a broken install: a bug
        return _sentence(f"Segmentation could not start: the Python package '{module}' is missing; "
                         "install it from the SpineSeg UNet panel (it offers to) or with pip")
    if returncode == EXIT_INPUT:
        return _sentence(f"Segmentation failed: {detail or 'bad input'}")
    if returncode is not None and returncode < 0:
        return _sentence(f"Segmentation stopped: the process was killed by signal {-returncode}")
    if returncode == EXIT_INTERNAL or detail:
        return _sentence("Segmentation failed with an internal error (please report it with the log)"
                         + (f": {detail}" if detail else ""))
    return _sentence(f"Segmentation failed with exit code {returncode}")


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

    def failure(self) -> str:
        """One sentence saying why the job did not succeed."""
        return failure_message(self.returncode, error_event=self.error, stderr_lines=list(self.stderr_lines),
                               cancelled=self.cancelled)


# --------------------------------------------------------------------------- dependencies
@dataclass(frozen=True)
class Requirement:
    """A Python package the core needs: ``module`` to import, ``pip`` spec to install it,
    ``via_pytorch_utils`` when the PyTorch extension should install it (torch builds depend on the GPU)."""

    module: str
    pip: str
    via_pytorch_utils: bool = False


CORE_REQUIREMENTS = (Requirement("numpy", "numpy>=1.22"), Requirement("SimpleITK", "SimpleITK>=2.2"),
                     Requirement("safetensors", "safetensors>=0.4"))
BACKEND_REQUIREMENTS = {
    "onnx": (Requirement("onnxruntime", "onnxruntime>=1.16"),),
    "torch": (Requirement("torch", "torch>=2.1", via_pytorch_utils=True), Requirement("monai", "monai>=1.3")),
}


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_requirements(backend: str, *, importable: Callable[[str], bool] = _importable) -> List[Requirement]:
    """The packages the chosen backend needs that this Python cannot import (found without importing them)."""
    if backend not in BACKEND_REQUIREMENTS:
        raise ValueError(f"backend {backend!r}: use onnx or torch")
    return [r for r in (*CORE_REQUIREMENTS, *BACKEND_REQUIREMENTS[backend]) if not importable(r.module)]


def restart_needed(installed: Sequence[Requirement], loaded_modules: Optional[Sequence[str]] = None) -> bool:
    """True when a package just installed was already imported in this process (the new version
    only takes effect after a restart). The segmentation itself runs in a fresh process, so
    newly installed packages work there without a restart."""
    loaded = set(sys.modules if loaded_modules is None else loaded_modules)
    return any(r.module in loaded for r in installed)


# --------------------------------------------------------------------------- models
#: Application setting (QSettings) listing the model folders that SpineSeg Training's
#: "Use this model" registered; SpineSeg UNet offers them in its model folder history.
USER_MODELS_KEY = "SpineSeg/UserModels"


def _setting_list(value: Any) -> List[str]:
    """QSettings hands back None, one string or a list, depending on what was stored."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    return [str(v) for v in value if v]


def add_user_model(current: Any, model_dir: Union[str, "os.PathLike[str]"]) -> List[str]:
    """The ``SpineSeg/UserModels`` list with ``model_dir`` added (absolute, no duplicates, newest last)."""
    new = str(Path(model_dir).resolve())
    return [p for p in _setting_list(current) if str(Path(p).resolve()) != new] + [new]


def user_model_dirs(value: Any) -> List[Path]:
    """The registered model folders that still hold a model, newest first."""
    return [Path(p) for p in reversed(_setting_list(value)) if (Path(p) / "model.json").is_file()]


def bundled_model_dir() -> Optional[Path]:
    """The bundled default model folder, or None when the extension ships none yet."""
    try:
        from spineseg.modelfile import default_model_path
    except ImportError:
        candidate = package_root() / "Resources" / "Models" / "spineseg-default"
        return candidate if (candidate / "model.json").is_file() else None
    path = default_model_path()
    return Path(path) if path else None


def model_summary(path: Optional[Path]) -> str:
    """A short description of a model folder for the panel, or the reason it cannot be used.

    Reads only ``model.json`` (the core checks the weights when it loads them).
    """
    import json

    if path is None or str(path) in ("", "."):
        return "No model folder chosen."
    path = Path(path)
    header = path / "model.json"
    if not header.is_file():
        return f"{path} is not a SpineSeg model folder (no model.json)."
    try:
        data = json.loads(header.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"{header} cannot be read ({exc})."
    if not isinstance(data, dict) or data.get("format") != "spineseg-model":
        return f"{header} is not a SpineSeg model header."
    names = ", ".join(str(c.get("name")) for c in data.get("classes", []) if isinstance(c, dict))
    arch = data.get("architecture", {}).get("name", "?") if isinstance(data.get("architecture"), dict) else "?"
    onnx = " + ONNX" if data.get("onnx") else ""
    return f"{data.get('name', path.name)} ({arch}{onnx}): {names or 'no classes'}"


def result_classes(done: Optional[Dict[str, Any]], model_dir: Optional[Path] = None) -> List[Dict[str, Any]]:
    """The classes of a finished segmentation: from the done event's first output, else from
    ``model.json`` of ``model_dir``. Raises ValueError when neither names any class."""
    import json

    outputs = (done or {}).get("outputs") or []
    if outputs and isinstance(outputs[0], dict) and outputs[0].get("classes"):
        return list(outputs[0]["classes"])
    if model_dir is not None and (Path(model_dir) / "model.json").is_file():
        data = json.loads((Path(model_dir) / "model.json").read_text(encoding="utf-8"))
        if isinstance(data, dict) and data.get("classes"):
            return list(data["classes"])
    raise ValueError("the segmentation result names no classes (neither the done event nor model.json)")
