"""Every Auto-class registration of nlpipe, in one place (called by ``import nlpipe``, see nlpipe/_registration.py).

Model types are prefixed ``nlpipe_`` so they never clash with a built-in transformers model type.
Each family adds one block below; imports stay inside the function so importing this module is cheap.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModelForTokenClassification


def register_all() -> None:
    """Register nlpipe's configs and models with transformers' Auto classes (idempotent)."""
    from .rnn_tagger.configuration_rnn_tagger import RnnTaggerConfig
    from .rnn_tagger.modeling_rnn_tagger import RnnForTokenClassification

    AutoConfig.register(RnnTaggerConfig.model_type, RnnTaggerConfig, exist_ok=True)
    AutoModelForTokenClassification.register(RnnTaggerConfig, RnnForTokenClassification, exist_ok=True)
    _register_token_classification_pipeline()

    # -- rnn_seq2seq (AutoModelForSeq2SeqLM) registers below --
    from transformers import AutoModelForSeq2SeqLM

    from .rnn_seq2seq.configuration_rnn_seq2seq import RnnSeq2SeqConfig
    from .rnn_seq2seq.modeling_rnn_seq2seq import RnnSeq2SeqForConditionalGeneration

    AutoConfig.register(RnnSeq2SeqConfig.model_type, RnnSeq2SeqConfig, exist_ok=True)
    AutoModelForSeq2SeqLM.register(RnnSeq2SeqConfig, RnnSeq2SeqForConditionalGeneration, exist_ok=True)

    # -- rnn_lm (AutoModelForCausalLM) registers below --
    from transformers import AutoModelForCausalLM

    from .rnn_lm.configuration_rnn_lm import RnnLmConfig
    from .rnn_lm.modeling_rnn_lm import RnnForCausalLM

    AutoConfig.register(RnnLmConfig.model_type, RnnLmConfig, exist_ok=True)
    AutoModelForCausalLM.register(RnnLmConfig, RnnForCausalLM, exist_ok=True)


def _register_token_classification_pipeline() -> None:
    """Make ``pipeline("ner" | "token-classification")`` use the class that also serves char/CRF taggers.

    It replaces the task's implementation for every model; models other than ours go through the
    standard code path unchanged. transformers warns when a built-in task is overwritten: that is
    the intent here, so the warning is silenced for this one call.
    """
    import transformers
    from transformers.pipelines import PIPELINE_REGISTRY

    from .rnn_tagger.pipeline_rnn_tagger import RnnTaggerTokenClassificationPipeline

    current = PIPELINE_REGISTRY.supported_tasks.get("token-classification", {})
    if current.get("impl") is RnnTaggerTokenClassificationPipeline:
        return
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        PIPELINE_REGISTRY.register_pipeline(
            "token-classification",
            pipeline_class=RnnTaggerTokenClassificationPipeline,
            pt_model=AutoModelForTokenClassification,
            default=current.get("default"),  # keep the built-in default model of the task
            type="text",
        )
    finally:
        transformers.logging.set_verbosity(verbosity)
