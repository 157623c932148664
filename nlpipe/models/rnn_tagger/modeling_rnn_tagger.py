"""Recurrent token classifiers: embeddings → (Bi)RNN/LSTM/GRU → linear label scores.

The forward pass: embed words, run the recurrent encoder (packed when the batch has sequences of
different lengths and the encoder is bidirectional, so the backward direction starts at each
sentence's true end), project to label scores, and compute cross-entropy when labels are given.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import TokenClassifierOutput

from .configuration_rnn_tagger import RnnTaggerConfig

RNN_CLASSES = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RnnTaggerPreTrainedModel(PreTrainedModel):
    config_class = RnnTaggerConfig
    base_model_prefix = "rnn_tagger"
    main_input_name = "input_ids"

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        # transformers 5 initialises nn.LSTM but not nn.GRU / nn.RNN: do the same for them.
        if isinstance(module, (nn.GRU, nn.RNN)):
            for name, param in module.named_parameters():
                if "weight" in name:
                    init.xavier_uniform_(param)
                elif "bias" in name:
                    init.zeros_(param)


class RnnForTokenClassification(RnnTaggerPreTrainedModel):
    """A recurrent tagger returning one score per label per token (`TokenClassifierOutput`)."""

    def __init__(self, config: RnnTaggerConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.pad_token_id)
        self.embedding_dropout = nn.Dropout(config.embedding_dropout)
        self.encoder = RNN_CLASSES[config.cell](
            input_size=config.embedding_dim,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            bidirectional=config.bidirectional,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.dropout = nn.Dropout(config.dropout)
        directions = 2 if config.bidirectional else 1
        self.classifier = nn.Linear(directions * config.hidden_size, config.num_labels)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings = value

    def encode(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Run the recurrent encoder over (B, T, E) inputs; returns (B, T, D*H) states (zeros at padding)."""
        if attention_mask is None or not self.config.bidirectional:
            # A forward-only RNN never reads the padding that follows a sentence: no packing needed.
            states, _ = self.encoder(inputs_embeds)
            return states
        lengths = attention_mask.sum(dim=1)
        if bool((lengths == inputs_embeds.size(1)).all()):
            states, _ = self.encoder(inputs_embeds)
            return states
        packed = pack_padded_sequence(inputs_embeds, lengths.cpu(), batch_first=True, enforce_sorted=False)
        packed_states, _ = self.encoder(packed)
        states, _ = pad_packed_sequence(packed_states, batch_first=True, total_length=inputs_embeds.size(1))
        return states  # (B, T, D*H)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> TokenClassifierOutput:
        """Score every token.

        Args:
            input_ids: (B, T) token ids.
            attention_mask: (B, T) 1 for real tokens, 0 for padding (right padding).
            labels: (B, T) label ids, -100 where no label applies (padding, continuation sub-tokens).
            inputs_embeds: (B, T, E) instead of input_ids.
            kwargs: ignored (pipelines pass e.g. `token_type_ids`).

        Returns:
            `TokenClassifierOutput` with `logits` (B, T, num_labels) and `loss` when labels are given.
        """
        if inputs_embeds is None:
            inputs_embeds = self.embeddings(input_ids)  # (B, T, E)
        embedded = self.embedding_dropout(inputs_embeds)
        states = self.dropout(self.encode(embedded, attention_mask))  # (B, T, D*H)
        logits = self.classifier(states)  # (B, T, L)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(
                logits.reshape(-1, self.num_labels).float(), labels.reshape(-1), ignore_index=-100
            )
        return TokenClassifierOutput(loss=loss, logits=logits)


__all__ = ["RnnForTokenClassification", "RnnTaggerPreTrainedModel"]
