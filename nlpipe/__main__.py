"""``python -m nlpipe`` = the ``nlpipe`` command."""

from .cli import entry_point

entry_point()
