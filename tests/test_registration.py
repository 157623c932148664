"""`import nlpipe` stays light (no torch, no transformers) yet registers nlpipe's models with
transformers' Auto classes whichever is imported first (nlpipe/_registration.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CHECK_REGISTERED = (
    "from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, "
    "AutoModelForTokenClassification, pipeline\n"
    "from transformers.pipelines import PIPELINE_REGISTRY\n"
    "c = AutoConfig.for_model('nlpipe_rnn_tagger', vocab_size=7)\n"
    "assert type(AutoModelForTokenClassification.from_config(c)).__name__ == 'RnnForTokenClassification'\n"
    "assert type(AutoModelForSeq2SeqLM.from_config(AutoConfig.for_model('nlpipe_rnn_seq2seq'))).__name__"
    " == 'RnnSeq2SeqForConditionalGeneration'\n"
    "assert type(AutoModelForCausalLM.from_config(AutoConfig.for_model('nlpipe_rnn_lm'))).__name__ == 'RnnForCausalLM'\n"
    "assert 'translation' in PIPELINE_REGISTRY.get_supported_tasks()\n"
    "print('registered')\n"
)


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_import_nlpipe_imports_neither_torch_nor_transformers() -> None:
    result = _python("import sys, nlpipe\nprint(sorted(m for m in ('torch', 'transformers', 'datasets') "
                     "if m in sys.modules))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout


@pytest.mark.parametrize(
    "first",
    [
        "import nlpipe",  # the README's order: nlpipe, then transformers
        "import transformers\nimport nlpipe",  # transformers already loaded: registers at once
        # nlpipe's own modules that import transformers themselves must not meet a half-imported module
        "import nlpipe.models.rnn_tagger.modeling_rnn_tagger",
        "import nlpipe.pipelines",
        "import nlpipe.run",
    ],
    ids=["nlpipe-first", "transformers-first", "modeling-module-first", "pipelines-first", "run-first"],
)
def test_models_are_registered_whatever_is_imported_first(first: str) -> None:
    result = _python(first + "\n" + CHECK_REGISTERED)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("registered")


def test_without_nlpipe_transformers_does_not_know_the_models() -> None:
    """The reference: the checks above pass only because of nlpipe's registration."""
    result = _python(CHECK_REGISTERED)
    assert result.returncode != 0 and "nlpipe_rnn_tagger" in result.stderr
