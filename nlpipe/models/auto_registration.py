"""Every Auto-class registration of nlpipe, in one place (called once by ``import nlpipe``).

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
