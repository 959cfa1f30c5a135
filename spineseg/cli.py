"""The ``spineseg`` command line.

Exit codes: 0 success, 2 bad usage or bad input (one line on stderr),
1 internal error (a bug: the traceback is printed), 130 cancelled.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import pkgutil
import sys
import traceback
import warnings
from pathlib import Path
from typing import List, Optional

from spineseg import __version__
from spineseg import commands as _commands
from spineseg.errors import EXIT_CANCELLED, EXIT_INPUT, EXIT_INTERNAL, Cancelled, InputError
from spineseg.progress import json_line


def _command_modules():
    for info in sorted(pkgutil.iter_modules(_commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{_commands.__name__}.{info.name}")
        if hasattr(module, "NAME"):  # the others hold what several commands share
            yield module


class _Parser(argparse.ArgumentParser):
    """argparse, remembering its usage error so that ``--json`` can end the stream with it too."""

    last_error = ""

    def error(self, message: str):  # type: ignore[override]
        _Parser.last_error = f"{self.prog}: {message}"
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="spineseg",
        description="Spine segmentation in thick-slice sagittal MR.",
    )
    parser.add_argument("--version", action="version", version=f"spineseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in _command_modules():
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"spineseg: warning: {message}", file=sys.stderr)


def _json_error(args: argparse.Namespace, message: str, code: int) -> None:
    """With ``--json``, every failure also ends the JSON stream with one error event (programs read
    stdout only). Under torchrun only rank 0 speaks, as for the other events."""
    if getattr(args, "json", False) and os.environ.get("RANK", "0") == "0":
        print(json_line("error", message=message, exit_code=code), flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if "" in argv:  # `-o "$OUT"` with OUT unset: "" is the current folder to every path function
        i = argv.index("")
        name = f"argument {argv[i - 1]}" if i > 0 and argv[i - 1].startswith("-") else "an argument"
        message = f"{name}: empty value (an unset shell variable?); give a path or value"
        if "--json" in argv:
            _json_error(argparse.Namespace(json=True), message, EXIT_INPUT)
        print(f"spineseg: error: {message}", file=sys.stderr)
        return EXIT_INPUT
    try:
        args = parser.parse_args(argv)  # exits 2 with argparse's message on bad usage
    except SystemExit as exc:
        if exc.code == EXIT_INPUT and "--json" in argv:
            _json_error(argparse.Namespace(json=True), _Parser.last_error or "bad usage", EXIT_INPUT)
        raise
    warnings.showwarning = _show_warning
    _quiet_itk()
    try:
        return int(args._run(args) or 0)
    except InputError as exc:
        message = " ".join(str(exc).split())  # one line, whatever text a library put into it
        _json_error(args, message, EXIT_INPUT)
        print(f"spineseg: error: {message}", file=sys.stderr)
        return EXIT_INPUT
    except OSError as exc:
        if exc.errno not in _USER_ERRNOS:
            return _internal(args, exc)
        message = _os_error_message(exc)
        _json_error(args, message, EXIT_INPUT)
        print(f"spineseg: error: {message}", file=sys.stderr)
        return EXIT_INPUT
    except (Cancelled, KeyboardInterrupt) as exc:
        _json_error(args, str(exc) or "cancelled", EXIT_CANCELLED)
        print(f"spineseg: cancelled{': ' + str(exc) if str(exc) else ''}", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as exc:  # a bug: show everything
        return _internal(args, exc)


def _quiet_itk() -> None:
    """ITK and GDCM print multi-line C++ warnings straight to stderr; SpineSeg checks what matters itself
    (geometry, payloads, series) and says it in one line."""
    try:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalWarningDisplay(False)
    except (ImportError, AttributeError):
        pass


def _internal(args: argparse.Namespace, exc: BaseException) -> int:
    _json_error(args, f"internal error ({type(exc).__name__}: {exc}); please report it", EXIT_INTERNAL)
    traceback.print_exc()
    print("spineseg: internal error (a bug; please report it with the traceback above)", file=sys.stderr)
    return EXIT_INTERNAL


#: operating-system errors that are the user's environment, not a bug: a full disk or quota, no permission,
#: a read-only location, a name too long for the filesystem
_USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENAMETOOLONG}


def _os_error_message(exc: OSError) -> str:
    where = exc.filename if exc.filename is not None else "output"
    if len(str(where)) > 120:
        where = f"{str(where)[:60]}...{str(where)[-20:]}"
    hint = {errno.ENOSPC: "free some disk space or choose another location",
            errno.EDQUOT: "free some space in your quota or choose another location",
            errno.ENAMETOOLONG: "choose a shorter name"}.get(exc.errno, "check the permissions or choose another location")
    free = ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) and exc.filename is not None:
        from spineseg.io import free_space

        free = f" ({free_space(Path(str(exc.filename)).parent)})"
    return f"{where}: {exc.strerror}{free}; {hint}"


if __name__ == "__main__":
    sys.exit(main())
