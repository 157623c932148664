"""Small sequence classifiers for the synthetic experiments, built from torch / transformers / nlpipe classes."""

from __future__ import annotations

import torch
from torch import nn

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RecurrentClassifier(nn.Module):
    """Embedding → one unidirectional RNN/LSTM/GRU → linear layer on the last state."""

    def __init__(self, cell: str, vocab_size: int, num_classes: int, hidden_size: int = 64, embedding_dim: int = 32):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.rnn = CELLS[cell](embedding_dim, hidden_size, batch_first=True)
        self.out = nn.Linear(hidden_size, num_classes)

    def forward_embeddings(self, embedded: torch.Tensor) -> torch.Tensor:
        """Logits `(B, C)` from input embeddings `(B, T, E)` (so gradients w.r.t. them can be taken)."""
        outputs, _ = self.rnn(embedded)  # (B, T, H)
        return self.out(outputs[:, -1])

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.forward_embeddings(self.embedding(input_ids))


class Seq2SeqClassifier(nn.Module):
    """nlpipe's attention seq2seq (unidirectional GRU encoder) writing the answer as a one-token target."""

    def __init__(self, vocab_size: int, first_class_id: int, hidden_size: int = 64, attention: str = "additive"):
        super().__init__()
        from ..models.rnn_seq2seq.modeling_rnn_seq2seq import (
            RnnSeq2SeqConfig,
            RnnSeq2SeqForConditionalGeneration,
        )

        # A unidirectional encoder: the attention, not a backward pass, has to bridge the distance.
        config = RnnSeq2SeqConfig(vocab_size=vocab_size, embedding_dim=32, hidden_size=hidden_size,
                                  encoder_bidirectional=False, attention=attention, dropout=0.0)
        self.model = RnnSeq2SeqForConditionalGeneration(config)
        self.first_class_id = first_class_id
        self.decoder_start = config.decoder_start_token_id

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        start = torch.full((input_ids.size(0), 1), self.decoder_start, dtype=torch.long)
        logits = self.model(input_ids=input_ids, decoder_input_ids=start).logits[:, 0]  # (B, V)
        return logits[:, self.first_class_id:]  # only the symbol ids are classes


class TransformerClassifier(nn.Module):
    """A small BERT encoder (transformers' own class) classifying from the first position."""

    def __init__(self, vocab_size: int, num_classes: int, max_length: int, hidden_size: int = 64):
        super().__init__()
        from transformers import BertConfig, BertForSequenceClassification

        config = BertConfig(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=hidden_size * 2, max_position_embeddings=max_length + 2,
                            num_labels=num_classes, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        self.model = BertForSequenceClassification(config)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids).logits
