"""One switch for every progress bar nlpipe shows or causes (``--no-progress``).

nlpipe's own bars (training, evaluation/generation over a split, experiments) go through :func:`bar`.
The libraries' bars — datasets' ``map`` (encoding), transformers' weight loading and saving,
huggingface_hub's downloads — are switched off with their own public switches: their environment
variables for libraries not imported yet (the CLI imports them late, and DDP workers inherit the
environment), their functions for those already imported. Bars go to stderr, never stdout.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

T = TypeVar("T")
_LIBRARY_SWITCHES = ("HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS")
_enabled = True
_set_by_us: list[str] = []


def enabled() -> bool:
    """Whether progress bars are on (``NLPIPE_NO_PROGRESS=1`` turns them off too)."""
    return _enabled and os.environ.get("NLPIPE_NO_PROGRESS", "") in ("", "0")


def set_progress(on: bool) -> None:
    """Turn every bar on or off; turning on again only undoes what nlpipe itself turned off."""
    global _enabled
    _enabled = on
    if not on:
        for name in ("NLPIPE_NO_PROGRESS", *_LIBRARY_SWITCHES):  # inherited by DDP workers and subprocesses
            if name not in os.environ:
                os.environ[name] = "1"
                _set_by_us.append(name)
    else:
        while _set_by_us:
            os.environ.pop(_set_by_us.pop(), None)
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars() if not on else datasets.enable_progress_bars()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub import utils as hub_utils

        hub_utils.disable_progress_bars() if not on else hub_utils.enable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar() if not on else hf_logging.enable_progress_bar()


def bar(iterable: Iterable[T], desc: str, total: int | None = None, *, main_process: bool = True,
        leave: bool = False, **kwargs: Any) -> Iterable[T]:
    """``iterable`` wrapped in a tqdm bar on stderr, or unwrapped when progress is off / not the main process."""
    if not (enabled() and main_process):
        return iterable
    from tqdm.auto import tqdm

    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    return tqdm(iterable, desc=desc, total=total, leave=leave, dynamic_ncols=True, mininterval=1.0, file=sys.stderr,
                **kwargs)
