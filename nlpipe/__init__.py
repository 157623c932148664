"""nlpipe: train, evaluate, compare and ship sequence models for NLP on the Hugging Face stack.

``import nlpipe`` registers nlpipe's models with transformers' Auto classes, so
``AutoModelForTokenClassification.from_pretrained(run_dir)`` and ``pipeline(...)`` work on run folders.
"""

from __future__ import annotations

import os as _os

# Keep transformers/datasets quiet about telemetry and the (unreachable) Hub unless asked otherwise.
_os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from ._registration import register_when_transformers_is_imported as _register  # noqa: E402
from .errors import NlpipeError  # noqa: E402

__version__ = "0.1.0"

# Not at once: transformers + torch cost ~5 s of CPU that `nlpipe --help` or `recipes list` never
# need. nlpipe registers the moment transformers is imported (now, if it already is) — see
# nlpipe/_registration.py for why this keeps the promise above.
_register()


def run_recipe(*args, **kwargs):  # noqa: D103 - documented in nlpipe.run.run_recipe
    from .run import run_recipe as _run_recipe

    try:
        return _run_recipe(*args, **kwargs)
    except NlpipeError as exc:  # a Python caller passes keywords, not CLI flags: say it their way
        raise exc.for_python() from None


run_recipe.__doc__ = "Train and evaluate a recipe; see `nlpipe.run.run_recipe`."

__all__ = ["NlpipeError", "run_recipe", "__version__"]
