"""The one exception type for problems a user can cause (bad recipe, missing file, bad input).

The CLI prints its message on one line and exits non-zero, without a traceback, so every message
must say *where* (file, line, key) and *what to do*.
"""

from __future__ import annotations

import re
import reprlib

MAX_VALUE_CHARS = 200
"""Most characters of a user's value that an error message quotes (see `shorten`)."""
MAX_MESSAGE_CHARS = 2000
"""Longest message an NlpipeError keeps (a safety net behind `shorten`)."""


def shorten(value: object, limit: int = MAX_VALUE_CHARS, *, quote: bool = True) -> str:
    """``repr(value)`` (or the text itself with ``quote=False``) cut to about ``limit`` characters.

    Every error that quotes a user's value goes through this, so a huge or alias-expanded value
    (a YAML "billion laughs") cannot turn one error line into megabytes. Containers are abbreviated
    with `reprlib` first, so a value that expands to billions of items is never rendered whole.
    """
    if isinstance(value, str):
        text = " ".join(value.split()) if not quote else value  # unquoted text: one line, whatever it holds
        if len(text) > limit:
            head = text[: limit - 30]
            return f"{head if not quote else repr(head)}… ({len(value):,} characters)"
        return text if not quote else repr(text)
    brief = reprlib.Repr()
    brief.maxstring = brief.maxother = limit
    brief.maxlist = brief.maxtuple = brief.maxdict = brief.maxset = 10
    brief.maxlevel = 3
    brief.maxlong = 60
    try:
        text = brief.repr(value)
    except (ValueError, RecursionError):  # an int of more than 4300 digits, a pathological object
        return f"<a {type(value).__name__} too large to show>"
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

    def for_python(self) -> NlpipeError:
        """The same error worded for a Python caller: CLI flags named as the keywords of the Python API.

        Advice inside a quoted ``nlpipe ...`` command line (e.g. how to resume) is left as written.
        """
        message = str(self)
        head, sep, command = message.partition("nlpipe ")
        for flag, keyword in _PYTHON_KEYWORDS:
            head = re.sub(flag, keyword, head)
        return NlpipeError(head + sep + command, exit_code=self.exit_code)


# CLI flag (regex) → the keyword a caller of `nlpipe.run_recipe` & co. passes instead. Longest first.
_PYTHON_KEYWORDS = (
    (r"choose another --output-dir", "pass another output_dir=..."),
    (r"--output-dir", "output_dir=..."),
    (r"--overwrite", "overwrite=True"),
    (r"--resume", "resume=True"),
    (r"--data-dir DIR", "data_dir=DIR"),
    (r"--data-dir", "data_dir=..."),
    (r"--data sample", 'data="sample"'),
    (r"--no-progress", "progress=False"),
)


def where(path: object, line: int | None = None, key: str | None = None) -> str:
    """Return a location prefix such as ``recipes/x.yaml: key 'train.lr'`` or ``train.txt:12``."""
    loc = str(path)
    if line is not None:
        loc += f":{line}"
    if key is not None:
        loc += f": key '{key}'"
    return loc
