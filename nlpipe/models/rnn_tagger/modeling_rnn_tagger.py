"""Recurrent token classifiers: embeddings (+ char features) → (Bi)RNN/LSTM/GRU → label scores (→ CRF).

The forward pass: embed words (optionally replacing some by ``[UNK]`` while training: word dropout),
concatenate a character-level vector per token when the config has a char encoder, run the recurrent
encoder (packed when the batch has sequences of different lengths and the encoder is bidirectional, so
the backward direction starts at each sentence's true end), project to label scores, and compute the
loss when labels are given: cross-entropy, or the CRF negative log-likelihood with ``use_crf``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import TokenClassifierOutput

from .char_encoder import CharWordEncoder
from .configuration_rnn_tagger import RnnTaggerConfig
from .crf import ConditionalRandomField, iob2_transition_constraints
from .two_pass_rnn import bidirectional_two_pass

RNN_CLASSES = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def uniform_mask_dropout(hidden: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """`F.dropout`, with the mask drawn as ``torch.rand(...) >= rate`` on a CPU.

    Same distribution (each element kept with probability 1 - rate, scaled by 1 / (1 - rate)), ≈ 2x faster
    forward + backward on a CPU than the ``bernoulli_`` kernel behind `F.dropout` (measured on (64, 35, 650)
    float32 and bf16 and on a 2600×650 weight: docs/performance.md). Other devices keep `F.dropout`'s fused kernel.
    """
    if not training or rate == 0:
        return hidden
    if hidden.device.type != "cpu" or rate >= 1:
        return F.dropout(hidden, rate, training=True)
    keep = torch.rand(hidden.shape, device=hidden.device) >= rate  # float32 uniforms, also under bf16 autocast
    return hidden * keep.to(hidden.dtype).mul_(1.0 / (1.0 - rate))


class UniformMaskDropout(nn.Dropout):
    """`nn.Dropout` (same settings and state) computed by `uniform_mask_dropout`."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - nn.Dropout's own argument name
        return uniform_mask_dropout(input, self.p, self.training)


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
        # Nor our own parameters (CRF scores) or nn.Conv1d (char-CNN); their reset_parameters use
        # torch.nn.init, which transformers guards during from_pretrained (loaded weights are kept).
        if isinstance(module, (ConditionalRandomField, CharWordEncoder)):
            module.reset_parameters()


class RnnForTokenClassification(RnnTaggerPreTrainedModel):
    """A recurrent tagger returning one score per label per token (`TokenClassifierOutput`).

    With ``config.char_encoder`` it needs ``char_ids`` (B, T, C) in `forward`; with ``config.use_crf`` the
    logits are CRF emission scores and `decode` gives the Viterbi path.
    """

    def __init__(self, config: RnnTaggerConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.pad_token_id)
        self.embedding_dropout = UniformMaskDropout(config.embedding_dropout)
        input_size = config.embedding_dim
        self.char_encoder = None
        if config.char_encoder != "none":
            self.char_encoder = CharWordEncoder(
                num_chars=len(config.char_vocab or []) + 2,  # + padding and unknown
                char_embedding_dim=config.char_embedding_dim,
                hidden_size=config.char_hidden_size,
                kind=config.char_encoder,
                kernel_size=config.char_kernel_size,
                padding_idx=config.CHAR_PAD_ID,
            )
            input_size += self.char_encoder.output_dim
        self.encoder = RNN_CLASSES[config.cell](
            input_size=input_size,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            bidirectional=config.bidirectional,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.dropout = UniformMaskDropout(config.dropout)
        directions = 2 if config.bidirectional else 1
        self.classifier = nn.Linear(directions * config.hidden_size, config.num_labels)
        self.crf = None
        if config.use_crf:
            # from_pretrained builds the model under a meta-device context; the constraints are real data
            # (the CRF checks them), so make them on the CPU. They are saved buffers and load to any device.
            with torch.device("cpu"):
                allowed, allowed_start = iob2_transition_constraints(config.id2label)
            self.crf = ConditionalRandomField(config.num_labels, allowed, allowed_start)
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
        if self.encoder.num_layers == 1:
            # Same numbers as packing, ≈2.5× faster on CPU (see two_pass_rnn.py).
            return bidirectional_two_pass(self.encoder, inputs_embeds, lengths)
        packed = pack_padded_sequence(inputs_embeds, lengths.cpu(), batch_first=True, enforce_sorted=False)
        packed_states, _ = self.encoder(packed)
        states, _ = pad_packed_sequence(packed_states, batch_first=True, total_length=inputs_embeds.size(1))
        return states  # (B, T, D*H)

    def _drop_words(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Word dropout (training only): replace real tokens by `unk_token_id` with probability `word_dropout`."""
        if not self.training or self.config.word_dropout <= 0 or self.config.unk_token_id is None:
            return input_ids
        drop = torch.rand(input_ids.shape, device=input_ids.device) < self.config.word_dropout  # (B, T)
        if attention_mask is not None:
            drop &= attention_mask.bool()
        return input_ids.masked_fill(drop, self.config.unk_token_id)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        char_ids: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> TokenClassifierOutput:
        """Score every token.

        Args:
            input_ids: (B, T) token ids.
            attention_mask: (B, T) 1 for real tokens, 0 for padding (right padding).
            labels: (B, T) label ids, -100 where no label applies (padding, continuation sub-tokens). With a
                CRF the labelled positions must be a prefix of each row (true for word-level tokenizers).
            inputs_embeds: (B, T, E) instead of input_ids.
            char_ids: (B, T, C) character ids of each token (see `RnnTaggerConfig.char_vocab`), 0-padded;
                required when the config has a char encoder.
            kwargs: ignored (pipelines pass e.g. `token_type_ids`).

        Returns:
            `TokenClassifierOutput` with `logits` (B, T, num_labels) — CRF emission scores with `use_crf` —
            and `loss` when labels are given.

        Raises:
            ValueError: `char_ids` missing for a char-feature model or not matching the tokens' shape.
        """
        if inputs_embeds is None:
            inputs_embeds = self.embeddings(self._drop_words(input_ids, attention_mask))  # (B, T, E)
        if self.char_encoder is not None:
            if char_ids is None or char_ids.shape[:2] != inputs_embeds.shape[:2]:
                raise ValueError(
                    f"this model reads characters (char_encoder={self.config.char_encoder!r}): pass char_ids of "
                    f"shape (batch, tokens, chars) = {tuple(inputs_embeds.shape[:2])} + (C,), "
                    f"got {None if char_ids is None else tuple(char_ids.shape)}. The tokenizer does not make them: "
                    "call model(**tokenize_with_chars(tokenizer, text, model.config)) (from pipeline_rnn_tagger, "
                    "i.e. nlpipe.models.rnn_tagger.pipeline_rnn_tagger or the file shipped with the model), or use "
                    "pipeline('ner', model=...), which adds them"
                )
            char_vectors = self.char_encoder(char_ids).to(inputs_embeds.dtype)  # (B, T, Dc)
            inputs_embeds = torch.cat([inputs_embeds, char_vectors], dim=-1)  # (B, T, E + Dc)
        embedded = self.embedding_dropout(inputs_embeds)
        states = self.dropout(self.encode(embedded, attention_mask))  # (B, T, D*H)
        logits = self.classifier(states)  # (B, T, L)
        loss = None
        if labels is not None:
            if self.crf is not None:
                loss = self.crf(logits, labels, labels.ne(-100)).mean()
            else:
                loss = nn.functional.cross_entropy(
                    logits.reshape(-1, self.num_labels).float(), labels.reshape(-1), ignore_index=-100
                )
        return TokenClassifierOutput(loss=loss, logits=logits)

    def decode(self, logits: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Best label id per token, (B, T) long: the CRF's Viterbi path with `use_crf` (0 at padding), else argmax."""
        if self.crf is None:
            return logits.argmax(dim=-1)
        mask = None if attention_mask is None else attention_mask.bool()
        return self.crf.viterbi_decode(logits, mask)

    def decode_scores(self, logits: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-token label log-probabilities, (B, T, L) float32, whose argmax is `decode`'s path.

        Without a CRF: ``log_softmax(logits)``. With a CRF: the log of the CRF's marginal probability of each
        label at each token (forward-backward, `ConditionalRandomField.marginals_and_viterbi`), except that where the
        Viterbi label is not the most probable one its value is swapped with the top one, so the scores
        still form a distribution and an argmax reader (the ``ner`` pipeline) picks the Viterbi path.
        """
        if self.crf is None:
            return logits.float().log_softmax(dim=-1)
        mask = None if attention_mask is None else attention_mask.bool()
        # Forward-backward and Viterbi in one loop (no autograd, so it also runs under inference_mode).
        marginals, path = self.crf.marginals_and_viterbi(logits.detach(), mask)
        scores = marginals.clamp_min(1e-12).log()  # (B, T, L); padding rows are all-zero marginals
        path = path.unsqueeze(-1)  # (B, T, 1)
        top_value, top_index = scores.max(dim=-1, keepdim=True)  # (B, T, 1)
        path_value = scores.gather(-1, path)
        scores = scores.scatter(-1, top_index, path_value).scatter(-1, path, top_value)
        return scores


__all__ = ["RnnForTokenClassification", "RnnTaggerPreTrainedModel"]
