"""User-facing errors.

Every error hmu-diag raises on bad input is a :class:`HmuDiagError` whose message is one line that names
the file (or object) and the problem.  The CLI prints ``hmu-diag: error: <message>`` and exits with
status 2; it never shows a traceback for these.
"""
from __future__ import annotations


class HmuDiagError(Exception):
    """Base class: a one-line, user-facing error (CLI exit status 2)."""


class CheckpointError(HmuDiagError):
    """A checkpoint could not be read: missing, corrupt, truncated, empty or of an unknown format."""


class UnsafePickleError(CheckpointError):
    """A pickle needs to execute code to load and the user did not pass ``trust_pickle=True``."""


class OptionError(HmuDiagError):
    """An option has an invalid value."""


def failed_status(error_type: str, message: str) -> str:
    """The ``status`` text of a table row whose analysis raised: ``"failed: <Type>: <first line of the message>"``
    (``"failed: <Type>"`` when the message is empty)."""
    first = message.splitlines()[0] if message else ""
    return f"failed: {error_type}: {first}" if first else f"failed: {error_type}"
