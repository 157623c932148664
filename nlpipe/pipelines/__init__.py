"""Pipelines transformers 5 removed, given back for seq2seq models: ``text2text-generation``,
``translation`` and ``summarization``.

``import nlpipe`` calls :func:`register_pipelines`, after which
``transformers.pipeline("translation", model=run_dir)`` works on any saved
``AutoModelForSeq2SeqLM`` run folder (nlpipe's ``rnn_seq2seq`` and transformers' Marian alike).
"""

# First: importing transformers runs nlpipe's registration hook (nlpipe/_registration.py), which
# imports .text2text; it must not be mid-import then.
import transformers  # noqa: F401

from .text2text import (
    PIPELINE_TASKS,
    SummarizationPipeline,
    Text2TextGenerationPipeline,
    TranslationPipeline,
    register_pipelines,
)

__all__ = [
    "PIPELINE_TASKS", "Text2TextGenerationPipeline", "TranslationPipeline", "SummarizationPipeline",
    "register_pipelines",
]
