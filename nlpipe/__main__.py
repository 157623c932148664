"""``python -m nlpipe`` = the ``nlpipe`` command."""

from .cli import main

main()
