"""Configuration of nlpipe's recurrent sequence taggers (Elman RNN, LSTM, GRU; uni- or bidirectional)."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import PretrainedConfig


@strict(accept_kwargs=True)
class RnnTaggerConfig(PretrainedConfig):
    r"""
    Configuration of [`RnnForTokenClassification`]: word embeddings → recurrent encoder → linear
    label scores per token.

    Args:
        vocab_size (`int`, *optional*, defaults to 100):
            Number of tokens in the vocabulary (the tokenizer's `len(tokenizer)`).
        embedding_dim (`int`, *optional*, defaults to 100):
            Size of the word embeddings.
        hidden_size (`int`, *optional*, defaults to 256):
            Size of the recurrent state per direction.
        cell (`str`, *optional*, defaults to `"lstm"`):
            Recurrent cell: `"rnn"` (Elman, tanh), `"lstm"` or `"gru"`.
        bidirectional (`bool`, *optional*, defaults to `True`):
            Read the sentence in both directions and concatenate the two states per token.
        num_layers (`int`, *optional*, defaults to 1):
            Number of stacked recurrent layers.
        dropout (`float`, *optional*, defaults to 0.5):
            Dropout on the recurrent outputs (and between stacked layers).
        embedding_dropout (`float`, *optional*, defaults to 0.5):
            Dropout on the word embeddings.
        initializer_range (`float`, *optional*, defaults to 0.1):
            Standard deviation of the normal initialisation of embeddings and linear layers.
        pad_token_id (`int`, *optional*, defaults to 0):
            Id of the padding token; its embedding stays zero.

    Labels come from `id2label` / `label2id` (set them, e.g. `RnnTaggerConfig(id2label={0: "O", 1: "B-PER"})`).

    Example:

    ```python
    >>> from nlpipe.models.rnn_tagger.configuration_rnn_tagger import RnnTaggerConfig
    >>> config = RnnTaggerConfig(vocab_size=5000, cell="gru", id2label={0: "O", 1: "B-PER", 2: "I-PER"})
    >>> model = RnnForTokenClassification(config)
    ```"""

    model_type = "nlpipe_rnn_tagger"

    vocab_size: int = 100
    embedding_dim: int = 100
    hidden_size: int = 256
    cell: str = "lstm"
    bidirectional: bool = True
    num_layers: int = 1
    dropout: float = 0.5
    embedding_dropout: float = 0.5
    initializer_range: float = 0.1
    pad_token_id: int | None = 0

    def validate_architecture(self) -> None:
        """Reject impossible settings early (called by transformers' strict validation)."""
        if self.cell not in ("rnn", "lstm", "gru"):
            raise ValueError(f"cell must be 'rnn', 'lstm' or 'gru', got {self.cell!r}")
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {self.num_layers}")


__all__ = ["RnnTaggerConfig"]
