"""Configuration of nlpipe's recurrent encoder–decoder (RNN/LSTM/GRU) with attention and optional copying."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import PretrainedConfig

_CELLS = ("rnn", "lstm", "gru")
_ATTENTIONS = ("none", "additive", "dot", "general", "multihead")


@strict(accept_kwargs=True)
class RnnSeq2SeqConfig(PretrainedConfig):
    r"""
    Configuration of [`RnnSeq2SeqForConditionalGeneration`]: a recurrent encoder reads the source, a recurrent
    decoder (initialised from the encoder's final state) writes the target one token at a time, attending over
    the encoder states at every step (Luong et al., 2015 flow: the new decoder state queries the source, the
    context and the state are combined into an "attentional vector" that predicts the next token).

    Args:
        vocab_size (`int`, *optional*, defaults to 8000):
            Size of the vocabulary shared by source and target (one joint tokenizer: `len(tokenizer)`).
        embedding_dim (`int`, *optional*, defaults to 256):
            Size of the token embeddings (encoder and decoder).
        hidden_size (`int`, *optional*, defaults to 256):
            Size of the decoder state and of the encoder outputs. A bidirectional encoder uses
            `hidden_size // 2` units per direction so that its outputs also have `hidden_size` features
            (then `hidden_size` must be even).
        encoder_cell (`str`, *optional*, defaults to `"gru"`):
            Recurrent cell of the encoder: `"rnn"` (Elman, tanh), `"lstm"` or `"gru"`.
        decoder_cell (`str`, *optional*, defaults to `"gru"`):
            Recurrent cell of the decoder: `"rnn"`, `"lstm"` or `"gru"`.
        encoder_bidirectional (`bool`, *optional*, defaults to `True`):
            Read the source in both directions (padded positions are packed away, so both directions start
            at the real tokens).
        encoder_layers (`int`, *optional*, defaults to 1):
            Number of stacked encoder layers.
        decoder_layers (`int`, *optional*, defaults to 1):
            Number of stacked decoder layers. Every decoder layer starts from
            `tanh(Linear(final top-layer encoder state))` (one slice of the projection per layer; LSTM decoders
            get a second projection for the cell state).
        dropout (`float`, *optional*, defaults to 0.1):
            Dropout on embeddings, between stacked recurrent layers and on the attentional vector before the
            output layer.
        attention (`str`, *optional*, defaults to `"additive"`):
            How the decoder looks at the source: `"none"` (no attention: the decoder only gets the initial state,
            the fixed-vector bottleneck baseline), `"additive"` (Bahdanau: `v^T tanh(W_s s + W_h h)`), `"dot"`
            (Luong: `s^T h`), `"general"` (Luong: `s^T W h`) or `"multihead"` (scaled dot product over
            `attention_heads` heads with query/key/value/output projections).
        attention_heads (`int`, *optional*, defaults to 4):
            Number of heads when `attention="multihead"` (must divide `hidden_size`); ignored otherwise.
        attention_mode (`str`, *optional*, defaults to `"soft"`):
            `"soft"`: the context is the softmax-weighted average of all source states. `"hard"`: only the
            `hard_attention_k` highest-scoring source positions are used (their softmax weights renormalised to
            sum to 1, all others exactly 0), trained with `hard_attention_estimator`.
        hard_attention_k (`int`, *optional*, defaults to 1):
            Number of source positions kept per decoder step (per head) in hard mode; a source with fewer real
            tokens keeps all of them.
        hard_attention_estimator (`str`, *optional*, defaults to `"straight_through"`):
            Gradient estimator of hard attention. Only `"straight_through"`: the forward pass uses the top-k
            renormalised weights, the backward pass uses the gradient of the soft weights (computed as
            `soft + (hard - soft).detach()`), so the scorer is still trained through the positions it dropped.
        input_feeding (`bool`, *optional*, defaults to `True`):
            Feed the previous step's attentional vector into the decoder RNN next to the token embedding
            (Luong et al., 2015), so the decoder knows what it attended to. Makes the decoder run step by step
            during training. Ignored when `attention="none"`.
        tie_embeddings (`bool`, *optional*, defaults to `False`):
            Use the decoder input embedding matrix as output layer weight. The attentional vector then has
            `embedding_dim` features instead of `hidden_size`.
        share_encoder_decoder_embeddings (`bool`, *optional*, defaults to `False`):
            Use one embedding matrix for the encoder and the decoder inputs (the vocabulary is shared anyway).
        copy_mechanism (`bool`, *optional*, defaults to `False`):
            Pointer-generator copying over the shared vocabulary (See et al., 2017): the next-token distribution
            is `p_gen * softmax(vocab logits) + (1 - p_gen) * attention scattered onto the source token ids`, with
            `p_gen = sigmoid(Linear([context; decoder state; input embedding]))` (multihead attention is averaged
            over heads). The model then returns **log-probabilities** as `logits` (a softmax of them gives the
            mixture back, so `generate()` works unchanged) and the loss is the NLL of those log-probabilities.
            Needs an attention other than `"none"`.
        initializer_range (`float`, *optional*, defaults to 0.1):
            Standard deviation of the normal initialisation of embeddings and linear layers (recurrent weights
            get Xavier-uniform initialisation, biases zeros).
        pad_token_id (`int`, *optional*, defaults to 0):
            Id of the padding token (its embedding stays zero; `-100` labels become this id in decoder inputs).
        bos_token_id (`int`, *optional*, defaults to 1):
            Id of the beginning-of-sequence token.
        eos_token_id (`int`, *optional*, defaults to 2):
            Id of the end-of-sequence token; generation stops there.
        decoder_start_token_id (`int`, *optional*, defaults to 1):
            First decoder input; labels are shifted right behind it for teacher forcing.
        is_encoder_decoder (`bool`, *optional*, defaults to `True`):
            Always `True`: `generate()` runs the encoder once and then decodes.
        use_cache (`bool`, *optional*, defaults to `True`):
            Return the decoder's recurrent state (`cache`) so generation feeds only the newest token per step.

    Example:

    ```python
    >>> from nlpipe.models.rnn_seq2seq.modeling_rnn_seq2seq import RnnSeq2SeqConfig, RnnSeq2SeqForConditionalGeneration
    >>> config = RnnSeq2SeqConfig(vocab_size=8000, encoder_cell="lstm", decoder_cell="lstm", attention="general")
    >>> model = RnnSeq2SeqForConditionalGeneration(config)
    ```"""

    model_type = "nlpipe_rnn_seq2seq"

    vocab_size: int = 8000
    embedding_dim: int = 256
    hidden_size: int = 256
    encoder_cell: str = "gru"
    decoder_cell: str = "gru"
    encoder_bidirectional: bool = True
    encoder_layers: int = 1
    decoder_layers: int = 1
    dropout: float | int = 0.1
    attention: str = "additive"
    attention_heads: int = 4
    attention_mode: str = "soft"
    hard_attention_k: int = 1
    hard_attention_estimator: str = "straight_through"
    input_feeding: bool = True
    tie_embeddings: bool = False
    share_encoder_decoder_embeddings: bool = False
    copy_mechanism: bool = False
    initializer_range: float = 0.1
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    decoder_start_token_id: int | None = 1
    is_encoder_decoder: bool = True
    use_cache: bool = True

    @property
    def tie_word_embeddings(self) -> bool:
        """Whether transformers must tie shared tensors (it reads this name; derived from our two flags)."""
        return bool(self.tie_embeddings or self.share_encoder_decoder_embeddings)

    def validate_architecture(self) -> None:
        """Reject impossible settings early (called by transformers' strict validation)."""
        for name in ("encoder_cell", "decoder_cell"):
            if getattr(self, name) not in _CELLS:
                raise ValueError(f"{name} must be one of {_CELLS}, got {getattr(self, name)!r}")
        if self.attention not in _ATTENTIONS:
            raise ValueError(f"attention must be one of {_ATTENTIONS}, got {self.attention!r}")
        if self.attention_mode not in ("soft", "hard"):
            raise ValueError(f"attention_mode must be 'soft' or 'hard', got {self.attention_mode!r}")
        if self.hard_attention_estimator != "straight_through":
            raise ValueError(
                f"hard_attention_estimator must be 'straight_through', got {self.hard_attention_estimator!r}"
            )
        if self.attention == "none" and (self.attention_mode == "hard" or self.copy_mechanism):
            raise ValueError(
                "attention='none' cannot be combined with attention_mode='hard' or copy_mechanism=True: "
                "choose an attention ('additive', 'dot', 'general' or 'multihead')"
            )
        if self.hard_attention_k < 1:
            raise ValueError(f"hard_attention_k must be >= 1, got {self.hard_attention_k}")
        if self.encoder_layers < 1 or self.decoder_layers < 1:
            raise ValueError(
                f"encoder_layers and decoder_layers must be >= 1, got {self.encoder_layers}, {self.decoder_layers}"
            )
        if self.encoder_bidirectional and self.hidden_size % 2:
            raise ValueError(
                f"a bidirectional encoder needs an even hidden_size (hidden_size // 2 per direction), "
                f"got {self.hidden_size}"
            )
        if self.attention == "multihead" and self.hidden_size % self.attention_heads:
            raise ValueError(
                f"attention_heads ({self.attention_heads}) must divide hidden_size ({self.hidden_size})"
            )
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


__all__ = ["RnnSeq2SeqConfig"]
