"""Errors in what the user gave: a file, a config value, a split, an argument.

Each kind of bad input (ConfigError, SplitFileError, CheckpointError, VideoDecodeError) is a
`UserError`, which carries the file and line it is about. The `hdc` command prints any of them as
one line, `hdc: <file>:<line>: <reason>`, and exits with status 2: the user can fix the input from
that line, and a traceback would only bury it. Every other exception is a bug in hdc_lib and keeps
its traceback.
"""
from __future__ import annotations

import os


class UserError(Exception):
    """Bad input: `reason`, and the `path` (and 1-based `line`) it was found in, when known."""

    def __init__(self, reason: str, path: str | os.PathLike | None = None, line: int | None = None):
        self.reason, self.path, self.line = reason, None if path is None else str(path), line
        super().__init__(reason, self.path, line)

    def __str__(self) -> str:
        where = ":".join(str(part) for part in (self.path, self.line) if part is not None)
        return f"{where}: {self.reason}" if where else self.reason
