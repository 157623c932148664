"""ONNX export config of the recurrent tagger (``nlpipe_rnn_tagger``): word + char ids → emission scores.

One graph, ``model.onnx``: ``input_ids`` (B, T), ``attention_mask`` (B, T) and, with a char encoder,
``char_ids`` (B, T, C) → ``logits`` (B, T, K). With ``use_crf`` the logits are the CRF's emissions; its
constrained transition scores go into ``onnx_config.json`` and the runner decodes with numpy Viterbi and
forward-backward marginals (``onnx_runner.LinearChainCrf``), i.e. what the ``ner`` pipeline reports.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .onnx_config import OnnxFamilyConfig, OnnxGraph, ParityReport
from .recurrent import PaddedRnn


class CharEncoderGraph(nn.Module):
    """`CharWordEncoder` in exportable ops: every word of the batch is encoded (no `unique`/boolean indexing)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.kind = encoder.kind
        self.padding_idx = encoder.padding_idx
        self.embedding = encoder.embedding
        if self.kind == "lstm":
            self.lstm = PaddedRnn(encoder.lstm)
            self.hidden = encoder.lstm.hidden_size
        else:
            self.conv = encoder.conv

    def forward(self, char_ids: torch.Tensor) -> torch.Tensor:
        """`(B, T, C)` character ids → `(B, T, D)` word vectors, zeros for empty (padding) words."""
        words = char_ids.reshape(-1, char_ids.size(2))  # (B*T, C)
        char_mask = words.ne(self.padding_idx)  # (B*T, C)
        lengths = char_mask.sum(dim=1)  # (B*T,)
        nonempty = (lengths > 0).unsqueeze(1)  # (B*T, 1)
        embedded = self.embedding(words) * char_mask.unsqueeze(2).to(self.embedding.weight.dtype)  # (B*T, C, E)
        if self.kind == "lstm":
            safe = lengths.clamp(min=1)  # empty words run on one padding char; zeroed below
            states = self.lstm(embedded, safe)  # (B*T, C, 2H)
            last = (safe - 1).view(-1, 1, 1).expand(-1, 1, self.hidden)  # (B*T, 1, H)
            forward_final = states[..., : self.hidden].gather(1, last).squeeze(1)  # (B*T, H)
            backward_final = states[:, 0, self.hidden :]  # (B*T, H)
            vectors = torch.cat([forward_final, backward_final], dim=-1)  # (B*T, 2H)
        else:
            features = self.conv(embedded.transpose(1, 2))  # (B*T, H, C)
            features = features.masked_fill(~char_mask.unsqueeze(1), -1e30)
            vectors = features.max(dim=2).values  # (B*T, H)
        vectors = torch.where(nonempty, vectors, torch.zeros_like(vectors))
        return vectors.reshape(char_ids.size(0), char_ids.size(1), -1)  # (B, T, D)


class RnnTaggerEmissions(nn.Module):
    """`RnnForTokenClassification.forward` (eval mode) over right-padded inputs → logits (B, T, K)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.embeddings = model.embeddings
        self.char_encoder = None if model.char_encoder is None else CharEncoderGraph(model.char_encoder)
        self.encoder = PaddedRnn(model.encoder)
        self.classifier = model.classifier

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, char_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        inputs = self.embeddings(input_ids)  # (B, T, E)
        if self.char_encoder is not None:
            inputs = torch.cat([inputs, self.char_encoder(char_ids)], dim=-1)  # (B, T, E + Dc)
        states = self.encoder(inputs, attention_mask.sum(dim=1))  # (B, T, D*H)
        return self.classifier(states)  # (B, T, K)


class RnnTaggerOnnxConfig(OnnxFamilyConfig):
    """Graphs and runner settings of ``nlpipe_rnn_tagger``."""

    kind = "token-classification"

    def graphs(self) -> list[OnnxGraph]:
        config = self.model.config
        inputs: dict[str, torch.Tensor] = {
            "input_ids": torch.tensor([[3, 4, 5, 6], [3, 4, config.pad_token_id or 0, config.pad_token_id or 0]]),
            "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]),
        }
        axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                "logits": {0: "batch", 1: "tokens"}}
        if config.char_encoder != "none":
            chars = torch.zeros(2, 4, config.max_word_chars, dtype=torch.long)
            chars[0, :, :3] = 2
            chars[1, :2, :2] = 3
            inputs["char_ids"] = chars
            axes["char_ids"] = {0: "batch", 1: "tokens", 2: "chars"}
        return [OnnxGraph("model.onnx", RnnTaggerEmissions(self.model), inputs, ["logits"], axes)]

    def runner_config(self) -> dict[str, Any]:
        config = self.model.config
        settings: dict[str, Any] = {
            "graphs": {"model": "model.onnx"},
            "id2label": {str(k): v for k, v in config.id2label.items()},
            "pad_token_id": config.pad_token_id or 0,
            "words_from_text": True,  # the nlpipe ner pipeline cuts each entity's word out of the text
        }
        if config.char_encoder != "none":
            settings["char_vocab"] = list(config.char_vocab or [])
            settings["max_word_chars"] = config.max_word_chars
        if self.model.crf is not None:
            with torch.no_grad():
                transitions, start, end = self.model.crf._constrained_scores()
            settings["crf"] = {"transitions": transitions.tolist(), "start": start.tolist(), "end": end.tolist()}
        return settings

    def default_texts(self) -> list[str]:
        from ..data.samples import make_sample

        return [" ".join(example["tokens"]) for example in make_sample("ner")["test"][:24]]

    def check_parity(self, runner: Any, texts: list[str]) -> ParityReport:
        """Entities of `pipeline("ner", aggregation_strategy="simple")` vs the runner's (same group, word and
        span; scores within ``score_tolerance``), and the emission scores of one padded batch."""
        return check_token_classification_parity(self, runner, texts)


SCORE_TOLERANCE = 1e-3  # entity scores (probabilities): float32 kernels, and float64 CRF marginals in numpy


def check_token_classification_parity(config: OnnxFamilyConfig, runner: Any, texts: list[str]) -> ParityReport:
    """Shared by the recurrent tagger and BERT: entities through `pipeline()` vs the runner, and raw logits."""
    from transformers import pipeline

    reference = pipeline("ner", model=str(config.run_dir), aggregation_strategy="simple")(texts)
    got = runner(texts)
    identical, mismatches = 0, []
    for text, want, have in zip(texts, reference, got, strict=True):
        same = [(e["entity_group"], e["word"], e["start"], e["end"]) for e in want] == [
            (e["entity_group"], e["word"], e["start"], e["end"]) for e in have
        ] and all(abs(float(a["score"]) - b["score"]) <= SCORE_TOLERANCE for a, b in zip(want, have, strict=True))
        identical += same
        if not same:
            mismatches.append({"text": text, "pytorch": [{**e, "score": float(e["score"])} for e in want],
                               "onnx": have})
    # Logits of one right-padded batch: the graph against the PyTorch forward pass.
    encodings, onnx_logits = runner.emissions(texts)
    batch = config.tokenizer(texts, padding=True, return_tensors="pt")
    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    model_config = config.model.config
    if getattr(model_config, "char_encoder", "none") != "none":
        import numpy as np

        inputs["char_ids"] = torch.from_numpy(np.ascontiguousarray(runner.last_char_ids))
    with torch.no_grad():
        torch_logits = config.model(**inputs).logits.float().numpy()
    diff = 0.0
    for row, encoding in enumerate(encodings):
        n = len(encoding.ids)
        diff = max(diff, float(abs(torch_logits[row, :n] - onnx_logits[row, :n]).max()))
    return ParityReport(len(texts), identical, diff, config.logit_tolerance, mismatches)
