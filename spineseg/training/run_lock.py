"""An exclusive lock on a run folder while ``spineseg train`` or ``spineseg cv`` works in it.

Two trainings into one folder would interleave their logs and leave a ``config.json`` and a
``model.json`` that disagree. The lock is an OS lock (``fcntl.flock``; ``msvcrt.locking`` on
Windows) on a lock file in the run folder, so the kernel releases it when the process ends in
any way, SIGKILL included: a lock file left by a killed run does not block ``--resume``. The
file's content (pid, host, start time) is only information for the refusal message.
"""
from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from spineseg.errors import InputError
from spineseg.io import make_parents, remove_empty
from spineseg.training.run_layout import LOCK

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt


def _try_lock(fd: int) -> bool:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextmanager
def run_lock(run: Path) -> Iterator[Path]:
    """Hold the run folder ``run`` (created if needed; removed again if still empty at the end).

    Raises :class:`InputError` at once, naming the holder, when another run holds it; then
    nothing in the folder is changed.
    """
    run = Path(run)
    path = run / LOCK
    created = make_parents(path)
    while True:
        try:
            fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            remove_empty(created)
            raise InputError(f"{path}: cannot create the run folder's lock file ({exc.strerror}); "
                             "choose a writable run folder") from None
        if not _try_lock(fd):
            os.close(fd)
            raise InputError(f"{run}: another training is using this run folder ({_holder(path)}); "
                             "wait for it to finish or choose another folder")
        try:  # the holder before us may have removed the file between our open and our lock: take the new one
            same = os.path.samestat(os.fstat(fd), os.stat(str(path)))
        except OSError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode("utf-8"))
        yield run
    finally:
        try:
            os.unlink(str(path))
        except OSError:
            pass
        os.close(fd)
        remove_empty(created)
