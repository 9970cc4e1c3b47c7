"""The errors tuneforge raises for things a user can fix.

Each carries enough to print one line that names the place and what to do; the CLI turns them
into that line and a non-zero exit, the Python API lets them propagate.
"""

from __future__ import annotations

from pathlib import Path


class TuneforgeError(Exception):
    """Base class: a problem with the user's input, not a bug in tuneforge."""


class DataError(TuneforgeError):
    """A data file is malformed. ``str()`` gives ``path:line: message``."""

    def __init__(self, path: str | Path, line: int | None, message: str):
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class ConfigError(TuneforgeError):
    """A config key is unknown or has a bad value. ``str()`` names the key."""


class InputError(TuneforgeError):
    """Inputs a predictor cannot take (a request asks for pairs from a single-text model...);
    the server answers 422 with the message."""
