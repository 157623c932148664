"""Shim so `python cli.py ...` works from a checkout; the real CLI is nlpipe/cli.py."""
from nlpipe.cli import entry_point

entry_point()
