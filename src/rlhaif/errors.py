"""User-facing errors: one clear message that says what, where (file, line, field) and how to fix it.

The CLI catches `RlhaifError` and prints its message without a traceback; internal invariants use
assertions instead.
"""

from __future__ import annotations


class RlhaifError(Exception):
    """An error caused by the user's input or environment, printed as one message by the CLI."""


class DataError(RlhaifError):
    """A malformed data file. The message names the file, the line (1-based) and the field."""

    def __init__(self, path: str, line: int | None, field: str | None, message: str):
        self.path, self.line, self.field = str(path), line, field
        where = self.path + (f":{line}" if line is not None else "")
        what = f" field '{field}':" if field else ""
        super().__init__(f"{where}:{what} {message}")


class ConfigError(RlhaifError):
    """A bad configuration key or value; the message suggests the right key when there is one."""
