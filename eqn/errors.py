"""The two errors eqn reports in one line: bad input (file, line, problem) and a setting or folder that cannot work."""

from __future__ import annotations

import os


class DataError(ValueError):
    """Bad input: the message names the file, the line (or row) and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str, line: int | None = None):
        where = f"{path}" if line is None else f"{path}, line {line}"
        super().__init__(f"{where}: {problem}")
        self.path, self.line, self.problem = str(path), line, problem


class ConfigError(ValueError):
    """A config value that cannot work, or a run directory that holds a different run."""
