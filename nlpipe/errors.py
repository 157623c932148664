"""The one exception type for problems a user can cause (bad recipe, missing file, bad input).

The CLI prints its message on one line and exits non-zero, without a traceback, so every message
must say *where* (file, line, key) and *what to do*.
"""

from __future__ import annotations


class NlpipeError(Exception):
    """A problem the user can fix. The message names the file/line/key and the fix."""

    def __init__(self, message: str, *, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def where(path: object, line: int | None = None, key: str | None = None) -> str:
    """Return a location prefix such as ``recipes/x.yaml: key 'train.lr'`` or ``train.txt:12``."""
    loc = str(path)
    if line is not None:
        loc += f":{line}"
    if key is not None:
        loc += f": key '{key}'"
    return loc
