"""Errors that reach the user as one line.

``InputError`` means the user can fix it (bad file, bad option, missing model):
the CLI prints its message and exits 2. Anything else is a bug: exit 1.
"""
from __future__ import annotations

#: exit codes of the ``spineseg`` command line (the Slicer modules read them too)
EXIT_OK, EXIT_INTERNAL, EXIT_INPUT, EXIT_CANCELLED = 0, 1, 2, 130


class SpineSegError(Exception):
    """Base class for errors SpineSeg reports to the user in one sentence."""


class InputError(SpineSegError):
    """Bad input or usage that the user can fix; the message names the problem and the fix."""


class Cancelled(SpineSegError):
    """The user cancelled a long operation (inference, training)."""
