"""Exception types with user-facing messages.

Every error a user can cause by bad input is an :class:`AtomarchError`; the CLI turns it
into one line ``error: <message>`` and exit status 2. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class AtomarchError(Exception):
    """Base class: a problem with the user's input, config or files."""


class StructureError(AtomarchError, ValueError):
    """A structure is unusable (empty, NaN coordinates, overlapping atoms, unknown element)."""


class ReadError(AtomarchError, OSError):
    """A file could not be read or parsed."""


class ConfigError(AtomarchError, KeyError):
    """A configuration key or value is wrong."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(AtomarchError, OSError):
    """A checkpoint is missing, corrupt or incompatible with this version of atomarch."""
