"""nlpipe: train, evaluate, compare and ship sequence models for NLP on the Hugging Face stack.

``import nlpipe`` registers nlpipe's models with transformers' Auto classes, so
``AutoModelForTokenClassification.from_pretrained(run_dir)`` and ``pipeline(...)`` work on run folders.
"""

from __future__ import annotations

import os as _os

# Keep transformers/datasets quiet about telemetry and the (unreachable) Hub unless asked otherwise.
_os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from .errors import NlpipeError  # noqa: E402
from .models.auto_registration import register_all as _register_all  # noqa: E402

__version__ = "0.1.0"

_register_all()

from .pipelines import register_pipelines as _register_pipelines  # noqa: E402

_register_pipelines()  # translation / summarization / text2text-generation (removed in transformers 5)


def run_recipe(*args, **kwargs):  # noqa: D103 - documented in nlpipe.run.run_recipe
    from .run import run_recipe as _run_recipe

    try:
        return _run_recipe(*args, **kwargs)
    except NlpipeError as exc:  # a Python caller passes keywords, not CLI flags: say it their way
        raise exc.for_python() from None


run_recipe.__doc__ = "Train and evaluate a recipe; see `nlpipe.run.run_recipe`."

__all__ = ["NlpipeError", "run_recipe", "__version__"]
