"""ONNX export config of the recurrent encoder–decoder (``nlpipe_rnn_seq2seq``): an encoder graph plus a
decoder-step graph that takes and returns the recurrent state, so generation stays O(1) work per token.

- ``encoder.onnx``: ``input_ids``, ``attention_mask`` (B, S), right-padded → ``memory_keys`` and
  ``memory_values`` (the attention's projections of the encoder states, computed once, not once per step),
  and the decoder's ``initial_hidden`` (L, B, H), ``initial_cell`` (LSTM), ``initial_feed`` (B, D, input
  feeding).
- ``decoder_step.onnx``: ``decoder_input_ids`` (B, 1), the memory, ``attention_mask``, ``input_ids`` (copy
  mechanism only) and the state → ``logits`` (B, V) and ``next_hidden`` / ``next_cell`` / ``next_feed``.

Greedy and beam search run in numpy in ``onnx_runner.OnnxSeq2Seq``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .onnx_config import OnnxFamilyConfig, OnnxGraph, ParityReport
from .recurrent import PaddedRnn

GENERATION_KEYS = ("num_beams", "max_new_tokens", "min_new_tokens", "no_repeat_ngram_size", "length_penalty",
                   "early_stopping", "forced_eos_token_id")


def state_names(config: Any) -> list[str]:
    """The decoder state's parts for this config: always ``hidden``; ``cell`` for LSTM; ``feed`` with input feeding."""
    names = ["hidden"]
    if config.decoder_cell == "lstm":
        names.append("cell")
    if config.input_feeding and config.attention != "none":
        names.append("feed")
    return names


class Seq2SeqEncoderGraph(nn.Module):
    """Encoder + attention memory + initial decoder state, for right-padded sources."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.embed_tokens = model.encoder.embed_tokens
        self.rnn = PaddedRnn(model.encoder.rnn)
        self.decoder = model.decoder
        self.names = state_names(model.config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mask = attention_mask.bool()
        hidden = self.rnn(self.embed_tokens(input_ids), attention_mask.sum(dim=1))  # (B, S, H)
        if self.decoder.use_attention:
            keys, values = self.decoder.attention.project_memory(hidden)
        else:
            keys = values = hidden  # unused by the step graph
        state = self.decoder.initial_state(hidden, mask)
        parts = {"hidden": state.hidden, "cell": state.cell, "feed": state.feed}
        return (keys, values, *[parts[name] for name in self.names])


class Seq2SeqDecoderStepGraph(nn.Module):
    """One decoder step from a given state, with the attention memory precomputed by the encoder graph."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.names = state_names(model.config)

    def forward(self, decoder_input_ids: torch.Tensor, memory_keys: torch.Tensor, memory_values: torch.Tensor,
                attention_mask: torch.Tensor, *rest: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from ..models.rnn_seq2seq.modeling_rnn_seq2seq import RnnSeq2SeqDecoderCache

        model, decoder = self.model, self.model.decoder
        source_ids = rest[0] if model.copy_gate is not None else None
        parts = dict(zip(self.names, rest[1:] if source_ids is not None else rest, strict=True))
        state = RnnSeq2SeqDecoderCache(parts["hidden"], parts.get("cell"), parts.get("feed"))
        if decoder.use_attention:
            # The decoder projects its memory from the encoder states; here the projections are inputs.
            decoder.attention.project_memory = lambda _: (memory_keys, memory_values)
        try:
            steps = decoder(decoder_input_ids, memory_keys, attention_mask.bool(), state)
        finally:
            if decoder.use_attention:
                del decoder.attention.project_memory  # the class's method again
        logits = model.lm_head(steps.attentional)  # (B, 1, V)
        if source_ids is not None:
            logits = model._copy_log_probs(logits, steps, source_ids)
        cache = {"hidden": steps.cache.hidden, "cell": steps.cache.cell, "feed": steps.cache.feed}
        return (logits[:, -1], *[cache[name] for name in self.names])


class RnnSeq2SeqOnnxConfig(OnnxFamilyConfig):
    """Graphs and runner settings of ``nlpipe_rnn_seq2seq``."""

    kind = "seq2seq"

    def graphs(self) -> list[OnnxGraph]:
        config = self.model.config
        names = state_names(config)
        pad = config.pad_token_id or 0
        source = {"input_ids": torch.tensor([[5, 6, 7, 8], [5, 6, pad, pad]]),
                  "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])}
        encoder = Seq2SeqEncoderGraph(self.model)
        with torch.no_grad():
            keys, values, *state = encoder(**source)
        source_axes = {"input_ids": {0: "batch", 1: "source"}, "attention_mask": {0: "batch", 1: "source"}}
        memory_axes = {"memory_keys": {0: "batch", keys.dim() - 2: "source"},
                       "memory_values": {0: "batch", values.dim() - 2: "source"}}
        state_axes = {n: ({1: "batch"} if n != "feed" else {0: "batch"}) for n in names}
        encoder_graph = OnnxGraph(
            "encoder.onnx", encoder, source, ["memory_keys", "memory_values", *[f"initial_{n}" for n in names]],
            {**source_axes, **memory_axes, **{f"initial_{n}": axes for n, axes in state_axes.items()}},
        )
        step_inputs = {"decoder_input_ids": torch.tensor([[3], [4]]), "memory_keys": keys, "memory_values": values,
                       "attention_mask": source["attention_mask"]}
        if self.model.copy_gate is not None:
            step_inputs["input_ids"] = source["input_ids"]
        step_inputs.update(dict(zip(names, state, strict=True)))
        step_graph = OnnxGraph(
            "decoder_step.onnx", Seq2SeqDecoderStepGraph(self.model), step_inputs,
            ["logits", *[f"next_{n}" for n in names]],
            {"decoder_input_ids": {0: "batch"}, "logits": {0: "batch"}, **memory_axes, **source_axes, **state_axes,
             **{f"next_{n}": axes for n, axes in state_axes.items()}},
        )
        return [encoder_graph, step_graph]

    def runner_config(self) -> dict[str, Any]:
        config = self.model.config
        generation = self.model.generation_config
        return {
            "graphs": {"encoder": "encoder.onnx", "decoder_step": "decoder_step.onnx"},
            "state_names": state_names(config),
            "state_shapes": {"hidden": [config.decoder_layers, "batch", config.hidden_size],
                             "cell": [config.decoder_layers, "batch", config.hidden_size],
                             "feed": ["batch", self.model.decoder.output_dim]},
            "pad_token_id": config.pad_token_id or 0,
            "eos_token_id": generation.eos_token_id if generation.eos_token_id is not None else config.eos_token_id,
            "decoder_start_token_id": config.decoder_start_token_id,
            "generation": generation_settings(self.model),
        }

    def default_texts(self) -> list[str]:
        from ..data.samples import make_sample

        kind = "summarization" if self.recipe is not None and self.recipe.task == "summarization" else "translation"
        return [example["source"] for example in make_sample(kind)["test"][:12]]

    def check_parity(self, runner: Any, texts: list[str]) -> ParityReport:
        """Greedy tokens of `generate()` vs the runner's, and the log-probabilities along that path."""
        return check_generation_parity(self, runner, texts, seq2seq=True)


def generation_settings(model: Any) -> dict[str, Any]:
    """The run's decoding settings the runner applies (`GENERATION_KEYS` that are set)."""
    generation = model.generation_config
    return {k: getattr(generation, k) for k in GENERATION_KEYS if getattr(generation, k, None) is not None}


def check_generation_parity(config: OnnxFamilyConfig, runner: Any, texts: list[str], seq2seq: bool) -> ParityReport:
    """Shared by the seq2seq and LM configs: greedy `generate()` ids vs the runner's, one text at a time, and
    the log-probabilities of the PyTorch model (one teacher-forced pass) vs the runner's steps on that path."""
    import numpy as np

    model, tokenizer = config.model, config.tokenizer
    max_new = int(runner.generation.get("max_new_tokens") or 20)
    identical, diff, mismatches = 0, 0.0, []
    for text in texts:
        inputs = tokenizer([text], return_tensors="pt")
        inputs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
        with torch.no_grad():
            generated = model.generate(**inputs, num_beams=1, do_sample=False, max_new_tokens=max_new)[0].tolist()
        if seq2seq:
            expected = generated[1:]  # drop the decoder start token
            pad = model.config.pad_token_id
            while expected and pad is not None and expected[-1] == pad and pad != runner.config["eos_token_id"]:
                expected.pop()
            got = runner.generate_ids([text], num_beams=1, max_new_tokens=max_new)[0]
        else:
            expected = generated
            got = runner.generate_ids(text, max_new_tokens=max_new)
        identical += got == expected
        if got != expected:
            mismatches.append({"text": text, "pytorch": expected, "onnx": got})
        diff = max(diff, _path_log_prob_diff(config, runner, text, inputs, expected, seq2seq, np))
    return ParityReport(len(texts), identical, diff, config.logit_tolerance, mismatches)


def _path_log_prob_diff(config, runner, text, inputs, tokens, seq2seq, np) -> float:
    model = config.model
    if seq2seq:
        start = model.config.decoder_start_token_id
        path = [start, *tokens][:-1] if tokens else [start]
        with torch.no_grad():
            logits = model(**inputs, decoder_input_ids=torch.tensor([path])).logits[0].float()
        expected = logits.log_softmax(-1).numpy()
        memory = runner.encode([text])
        state = runner.initial_state(memory)
        got = []
        for token in path:
            log_probs, state = runner.step(np.asarray([token]), memory, state)
            got.append(log_probs[0])
        return float(np.abs(np.stack(got) - expected).max())
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([tokens])).logits[0].float().numpy()
    state = runner.initial_state()
    split = len(inputs["input_ids"][0])
    first, state = runner.step(np.asarray([tokens[:split]]), state)
    rest = [first[0]]
    for token in tokens[split:]:
        step, state = runner.step(np.asarray([[token]]), state)
        rest.append(step[0])
    return float(np.abs(np.concatenate(rest) - logits).max())
