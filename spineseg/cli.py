"""The ``spineseg`` command line.

Exit codes: 0 success, 2 bad usage or bad input (one line on stderr),
1 internal error (a bug: the traceback is printed), 130 cancelled.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import traceback
import warnings
from typing import List, Optional

from spineseg import __version__
from spineseg import commands as _commands
from spineseg.errors import EXIT_CANCELLED, EXIT_INPUT, EXIT_INTERNAL, Cancelled, InputError
from spineseg.progress import json_line


def _command_modules():
    for info in sorted(pkgutil.iter_modules(_commands.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"{_commands.__name__}.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    args = parser.parse_args(argv)  # exits 2 with argparse's message on bad usage
    warnings.showwarning = _show_warning
    try:
        return int(args._run(args) or 0)
    except InputError as exc:
        _json_error(args, str(exc), EXIT_INPUT)
        print(f"spineseg: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except (Cancelled, KeyboardInterrupt) as exc:
        _json_error(args, str(exc) or "cancelled", EXIT_CANCELLED)
        print(f"spineseg: cancelled{': ' + str(exc) if str(exc) else ''}", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as exc:  # a bug: show everything
        _json_error(args, f"internal error ({type(exc).__name__}: {exc}); please report it", EXIT_INTERNAL)
        traceback.print_exc()
        print("spineseg: internal error (a bug; please report it with the traceback above)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
