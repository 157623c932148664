"""The one exception type for problems a user can cause (bad recipe, missing file, bad input).

The CLI prints its message on one line and exits non-zero, without a traceback, so every message
must say *where* (file, line, key) and *what to do*.
"""

from __future__ import annotations

import re


class NlpipeError(Exception):
    """A problem the user can fix. The message names the file/line/key and the fix."""

    def __init__(self, message: str, *, exit_code: int = 2) -> None:
        super().__init__(message)
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
