"""Headless SpineSeg training: ``Slicer --no-main-window --python-script train.py train|cv DATA -o RUN [options]``.

Runs ``spineseg train`` / ``spineseg cv`` with Slicer's Python in a child process
(the options are the CLI's; ``--json`` is added) and prints one line per event.
No display is needed. Exit codes: 0 done, 1 internal error, 2 bad input or usage,
130 cancelled. Also runs with a plain Python that can import ``spineseg``.
"""
import os
import sys


def _importCore() -> None:
    try:
        import spineseg  # noqa: F401
    except ImportError:  # source checkout: <repository>/SpineSegTraining/Scripts/train.py
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        sys.path.insert(0, root)


def main(argv) -> int:
    _importCore()
    from spineseg.moduleslogic.headless_training import headless_main

    return headless_main(argv)


def _exit(code: int) -> None:
    if "slicer" in sys.modules:  # inside Slicer: let the application quit with this status
        import slicer

        slicer.util.exit(code)
    else:
        sys.exit(code)


if __name__ == "__main__":
    _exit(main(sys.argv[1:]))
