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
        unk_token_id (`int`, *optional*):
            Id of the unknown-word token; needed only for `word_dropout`.
        word_dropout (`float`, *optional*, defaults to 0.0):
            While training, replace each real input token by `unk_token_id` with this probability, so the
            model learns an `[UNK]` embedding (and, with a char encoder, to rely on characters) for words it
            has never seen. Off at evaluation.
        use_crf (`bool`, *optional*, defaults to `False`):
            Put a linear-chain CRF with IOB2 transition constraints (built from `id2label`) on top of the
            label scores: the loss becomes the CRF negative log-likelihood and `decode` returns Viterbi paths.
        char_encoder (`str`, *optional*, defaults to `"none"`):
            Character-level word encoder whose output is concatenated to the word embeddings: `"none"`,
            `"lstm"` (BiLSTM final states, Lample et al. 2016) or `"cnn"` (max-pooled convolution, Ma & Hovy 2016).
            The model then needs `char_ids` in `forward`.
        char_embedding_dim (`int`, *optional*, defaults to 25):
            Size of the character embeddings.
        char_hidden_size (`int`, *optional*, defaults to 25):
            Char-LSTM state size per direction (word vector of `2 * char_hidden_size`) or number of CNN filters.
        char_kernel_size (`int`, *optional*, defaults to 3):
            Width of the char-CNN filters, in characters (odd).
        max_word_chars (`int`, *optional*, defaults to 20):
            Characters kept per token; longer tokens keep their first and last characters (prefix and suffix).
        char_vocab (`list[str]`, *optional*):
            The known characters; character `char_vocab[i]` has id `i + 2` (0 is padding, 1 is unknown). Stored
            here so that inference maps characters exactly as training did, without nlpipe (see `char_to_id`).

    Labels come from `id2label` / `label2id` (set them, e.g. `RnnTaggerConfig(id2label={0: "O", 1: "B-PER"})`).

    Example:

    ```python
    >>> from nlpipe.models.rnn_tagger.configuration_rnn_tagger import RnnTaggerConfig
    >>> config = RnnTaggerConfig(vocab_size=5000, cell="gru", id2label={0: "O", 1: "B-PER", 2: "I-PER"})
    >>> model = RnnForTokenClassification(config)
    >>> crf_config = RnnTaggerConfig(use_crf=True, char_encoder="lstm", char_vocab=list("abc"), id2label=...)
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
    unk_token_id: int | None = None
    word_dropout: float = 0.0
    use_crf: bool = False
    char_encoder: str = "none"
    char_embedding_dim: int = 25
    char_hidden_size: int = 25
    char_kernel_size: int = 3
    max_word_chars: int = 20
    char_vocab: list[str] | None = None

    # Character ids below 2 are reserved: 0 pads a word's characters, 1 is an unknown character.
    CHAR_PAD_ID = 0
    CHAR_UNK_ID = 1

    def char_to_id(self) -> dict[str, int]:
        """The character → id mapping of `char_vocab` (ids start at 2; empty without a vocabulary)."""
        return {char: index + 2 for index, char in enumerate(self.char_vocab or [])}

    def validate_architecture(self) -> None:
        """Reject impossible settings early (called by transformers' strict validation)."""
        if self.cell not in ("rnn", "lstm", "gru"):
            raise ValueError(f"cell must be 'rnn', 'lstm' or 'gru', got {self.cell!r}")
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {self.num_layers}")
        if self.char_encoder not in ("none", "lstm", "cnn"):
            raise ValueError(f"char_encoder must be 'none', 'lstm' or 'cnn', got {self.char_encoder!r}")
        if self.max_word_chars < 1:
            raise ValueError(f"max_word_chars must be >= 1, got {self.max_word_chars}")
        if not 0.0 <= self.word_dropout < 1.0:
            raise ValueError(f"word_dropout must be in [0, 1), got {self.word_dropout}")


__all__ = ["RnnTaggerConfig"]
