"""Configuration of nlpipe's recurrent causal language models (Elman RNN, LSTM, GRU)."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import PretrainedConfig

CELLS = ("rnn", "lstm", "gru")


@strict(accept_kwargs=True)
class RnnLmConfig(PretrainedConfig):
    r"""
    Configuration of [`RnnForCausalLM`]: token embeddings → stacked unidirectional RNN/LSTM/GRU →
    linear next-token scores. The recurrent state is the model's `cache`, so `generate()` costs O(1)
    per new token and training can carry the state across chunks of a stream (truncated BPTT).

    Args:
        vocab_size (`int`, *optional*, defaults to 10000):
            Number of tokens in the vocabulary (the tokenizer's `len(tokenizer)`).
        embedding_dim (`int`, *optional*, defaults to 256):
            Size of the token embeddings.
        hidden_size (`int`, *optional*, defaults to 256):
            Size of the recurrent state of every layer.
        cell (`str`, *optional*, defaults to `"lstm"`):
            Recurrent cell: `"rnn"` (Elman, tanh), `"lstm"` or `"gru"`.
        num_layers (`int`, *optional*, defaults to 2):
            Number of stacked recurrent layers.
        dropout (`float`, *optional*, defaults to 0.2):
            Dropout between stacked recurrent layers and on the output of the last layer.
        embedding_dropout (`float`, *optional*, defaults to 0.1):
            Dropout on the token embeddings.
        variational_dropout (`bool`, *optional*, defaults to `False`):
            Draw each dropout mask once per sequence and use it at every time step (Gal & Ghahramani 2016;
            "locked" dropout in AWD-LSTM, Merity et al. 2018) for the embeddings, between layers and on the
            output, instead of a new mask per position. Training then runs the layers one at a time;
            evaluation and generation are unchanged (no dropout there).
        weight_dropout (`float`, *optional*, defaults to 0.0):
            DropConnect on the hidden-to-hidden weights of every layer during training (AWD-LSTM uses 0.5 on
            Penn Treebank): one mask per forward pass, shared by all time steps, so the recurrence itself is
            regularized without touching the fused recurrent kernel.
        tie_word_embeddings (`bool`, *optional*, defaults to `True`):
            Share one matrix between the input embeddings and the output layer (`lm_head.weight` is
            `embed_tokens.weight`). The output layer then reads `embedding_dim` features: when
            `hidden_size != embedding_dim` a bias-free linear `output_projection` (hidden_size →
            embedding_dim) is inserted before it. Untied models have no projection and an output
            layer reading `hidden_size` features.
        initializer_range (`float`, *optional*, defaults to 0.1):
            Standard deviation of the normal initialisation of the embeddings and linear layers.
        pad_token_id (`int`, *optional*):
            Id of the padding token. Padded positions (`attention_mask == 0`) never change the state.
        bos_token_id (`int`, *optional*):
            Id of the beginning-of-sequence token (`generate()` starts from it when given no prompt).
        eos_token_id (`int` or `list[int]`, *optional*):
            Id(s) of the end-of-sequence token(s): `generate()` stops a sequence when one is produced.
        use_cache (`bool`, *optional*, defaults to `True`):
            Return the final recurrent state as `cache` (needed for fast generation and for carrying the
            state across chunks); `False` makes `generate()` recompute the whole prefix at every step.

    Example:

    ```python
    >>> from nlpipe.models.rnn_lm.configuration_rnn_lm import RnnLmConfig
    >>> config = RnnLmConfig(vocab_size=5000, cell="gru", num_layers=2, eos_token_id=2)
    >>> model = RnnForCausalLM(config)  # from nlpipe.models.rnn_lm.modeling_rnn_lm
    ```"""

    model_type = "nlpipe_rnn_lm"

    vocab_size: int = 10000
    embedding_dim: int = 256
    hidden_size: int = 256
    cell: str = "lstm"
    num_layers: int = 2
    dropout: float | int = 0.2
    embedding_dropout: float | int = 0.1
    variational_dropout: bool = False
    weight_dropout: float | int = 0.0
    tie_word_embeddings: bool = True
    initializer_range: float = 0.1
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    use_cache: bool = True

    def validate_architecture(self) -> None:
        """Reject impossible settings early (called by transformers' strict validation)."""
        if self.cell not in CELLS:
            raise ValueError(f"RnnLmConfig: cell must be one of {CELLS}, got {self.cell!r}; fix the 'cell' key")
        for key in ("vocab_size", "embedding_dim", "hidden_size", "num_layers"):
            if getattr(self, key) < 1:
                raise ValueError(f"RnnLmConfig: {key} must be >= 1, got {getattr(self, key)}")
        for key in ("dropout", "embedding_dropout", "weight_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ValueError(f"RnnLmConfig: {key} must be in [0, 1), got {getattr(self, key)}")


__all__ = ["RnnLmConfig"]
