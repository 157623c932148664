"""The one exception type for problems a user can cause (bad recipe, missing file, bad input).

The CLI prints its message on one line and exits non-zero, without a traceback, so every message
must say *where* (file, line, key) and *what to do*.
"""

from __future__ import annotations

MAX_VALUE_CHARS = 200
"""Most characters of a user's value that an error message quotes (see `shorten`)."""
MAX_MESSAGE_CHARS = 2000
"""Longest message an NlpipeError keeps (a safety net behind `shorten`)."""


def shorten(value: object, limit: int = MAX_VALUE_CHARS) -> str:
    """``repr(value)`` cut to about ``limit`` characters, saying how long it was.

    Every error that quotes a user's value goes through this, so a huge or alias-expanded value
    (a YAML "billion laughs") cannot turn one error line into megabytes.
    """
    try:
        text = repr(value)
    except RecursionError:
        return "<a self-referencing value>"
    if len(text) <= limit:
        return text
    return f"{text[: limit - 20]}…{text[-10:]} ({len(text):,} characters)"


def _cap(message: str) -> str:
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    half = MAX_MESSAGE_CHARS // 2
    return f"{message[:half]} …[{len(message) - 2 * half:,} characters left out]… {message[-half:]}"


class NlpipeError(Exception):
    """A problem the user can fix. The message names the file/line/key and the fix."""

    def __init__(self, message: str, *, exit_code: int = 2) -> None:
        super().__init__(_cap(message))
        self.exit_code = exit_code


def where(path: object, line: int | None = None, key: str | None = None) -> str:
    """Return a location prefix such as ``recipes/x.yaml: key 'train.lr'`` or ``train.txt:12``."""
    loc = str(path)
    if line is not None:
        loc += f":{line}"
    if key is not None:
        loc += f": key '{key}'"
    return loc
