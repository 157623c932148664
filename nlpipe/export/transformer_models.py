"""ONNX export configs of the Transformer recipes' models (transformers' own BERT, Marian and GPT-2 classes).

Optimum's exporters would be the natural route, but every Optimum release (optimum 2.1 / optimum-onnx 0.1 at
the time of writing) requires transformers < 5, and nlpipe pins transformers 5: the graphs are traced with
``torch.onnx.export`` here, with eager attention (the SDPA path builds its mask with ops the TorchScript
exporter does not trace with dynamic shapes).

- BERT token classification: ``model.onnx``: ``input_ids``, ``attention_mask``, ``token_type_ids`` → ``logits``.
- GPT-2: ``model.onnx`` reads ``input_ids`` (B, T) after ``past_key_i`` / ``past_value_i`` (B, heads, P, head_dim)
  per layer and returns ``logits`` (B, T, V) and the grown caches (``next_past_key_i`` ...): the prompt in one
  call (P = 0), then one token per call — the same state-passing contract as the recurrent LM.
- Marian: ``encoder.onnx``: ``input_ids``, ``attention_mask`` → every decoder layer's cross-attention keys and
  values (``cross_key_i`` / ``cross_value_i``, computed once per source); ``decoder_step.onnx``: one token
  (``decoder_input_ids`` (B, 1)), the source ``attention_mask``, the cross keys/values and the self-attention
  caches ``past_key_i`` / ``past_value_i`` → ``logits`` (B, V) and the grown caches. The numpy search of the
  recurrent seq2seq runs it unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .onnx_config import OnnxFamilyConfig, OnnxGraph, ParityReport


def use_eager_attention(model: nn.Module) -> None:
    """Switch a transformers model to eager attention (traceable with dynamic batch and length)."""
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    else:
        model.config._attn_implementation = "eager"


class TokenClassifierLogits(nn.Module):
    """A transformers token classifier returning only its logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits


class BertTokenClassificationOnnxConfig(OnnxFamilyConfig):
    """Graph and runner settings of ``BertForTokenClassification``."""

    kind = "token-classification"

    def graphs(self) -> list[OnnxGraph]:
        use_eager_attention(self.model)
        inputs = {"input_ids": torch.tensor([[2, 5, 6, 7, 3], [2, 5, 3, 0, 0]]),
                  "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])}
        inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])
        axes = {name: {0: "batch", 1: "tokens"} for name in [*inputs, "logits"]}
        return [OnnxGraph("model.onnx", TokenClassifierLogits(self.model), inputs, ["logits"], axes)]

    def runner_config(self) -> dict[str, Any]:
        config = self.model.config
        return {
            "graphs": {"model": "model.onnx"},
            "id2label": {str(k): v for k, v in config.id2label.items()},
            "pad_token_id": config.pad_token_id or 0,
            "unk_token_id": self.tokenizer.unk_token_id,
            "words_from_text": False,  # the standard pipeline joins the group's tokens with the decoder
        }

    def default_texts(self) -> list[str]:
        from .rnn_tagger import RnnTaggerOnnxConfig

        return RnnTaggerOnnxConfig.default_texts(self)

    def check_parity(self, runner: Any, texts: list[str]) -> ParityReport:
        from .rnn_tagger import check_token_classification_parity

        return check_token_classification_parity(self, runner, texts)


def cache_names(layers: int) -> list[str]:
    """Flat names of a per-layer key/value cache: past_key_0, past_value_0, past_key_1, ..."""
    return [f"past_{kind}_{layer}" for layer in range(layers) for kind in ("key", "value")]


def dynamic_cache(flat: tuple[torch.Tensor, ...]) -> Any:
    """A transformers `DynamicCache` holding the given (key, value) tensors per layer."""
    from transformers import DynamicCache

    cache = DynamicCache()
    for layer in range(len(flat) // 2):
        cache.update(flat[2 * layer], flat[2 * layer + 1], layer)
    return cache


def flat_cache(cache: Any) -> list[torch.Tensor]:
    """(key, value) tensors of every layer of a `DynamicCache`, flattened in `cache_names` order."""
    return [tensor for layer in cache.layers for tensor in (layer.keys, layer.values)]


class CausalLmWithPastGraph(nn.Module):
    """A transformers causal LM reading tokens after a flat key/value cache and returning the grown cache."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        output = self.model(input_ids=input_ids, past_key_values=dynamic_cache(past), use_cache=True)
        return (output.logits, *flat_cache(output.past_key_values))


class Gpt2OnnxConfig(OnnxFamilyConfig):
    """Graph and runner settings of ``GPT2LMHeadModel``."""

    kind = "causal-lm"

    def _shape(self) -> tuple[int, int, int]:
        config = self.model.config
        return config.n_layer, config.n_head, config.n_embd // config.n_head

    def graphs(self) -> list[OnnxGraph]:
        use_eager_attention(self.model)
        layers, heads, head_dim = self._shape()
        names = cache_names(layers)
        inputs: dict[str, torch.Tensor] = {"input_ids": torch.tensor([[5, 6], [7, 8]])}
        for name in names:
            inputs[name] = torch.randn(2, heads, 3, head_dim)  # a non-empty past, so the concat is traced
        axes = {"input_ids": {0: "batch", 1: "tokens"}, "logits": {0: "batch", 1: "tokens"}}
        for name in names:
            axes[name] = {0: "batch", 2: "past"}
            axes[f"next_{name}"] = {0: "batch", 2: "past_and_tokens"}
        return [OnnxGraph("model.onnx", CausalLmWithPastGraph(self.model), inputs,
                          ["logits", *[f"next_{n}" for n in names]], axes)]

    def runner_config(self) -> dict[str, Any]:
        layers, heads, head_dim = self._shape()
        from .rnn_lm import lm_generation_settings

        generation = self.model.generation_config
        settings = lm_generation_settings(self.model, self.recipe)
        names = cache_names(layers)
        return {
            "graphs": {"model": "model.onnx"},
            "state_names": names,
            "state_shapes": {name: ["batch", heads, 0, head_dim] for name in names},
            "eos_token_id": generation.eos_token_id if generation.eos_token_id is not None
            else self.model.config.eos_token_id,
            "generation": settings,
        }

    def default_texts(self) -> list[str]:
        from .rnn_lm import RnnLmOnnxConfig

        return RnnLmOnnxConfig.default_texts(self)

    def check_parity(self, runner: Any, texts: list[str]) -> ParityReport:
        from .rnn_seq2seq import check_generation_parity

        return check_generation_parity(self, runner, texts, seq2seq=False)


class MarianEncoderGraph(nn.Module):
    """Encoder plus each decoder layer's cross-attention key/value projections of its output."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        hidden = self.model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        outputs = []
        for layer in self.model.get_decoder().layers:
            attention = layer.encoder_attn
            shape = (*hidden.shape[:-1], -1, attention.head_dim)  # (B, S, heads, head_dim)
            outputs.append(attention.k_proj(hidden).view(shape).transpose(1, 2))  # (B, heads, S, head_dim)
            outputs.append(attention.v_proj(hidden).view(shape).transpose(1, 2))
        return tuple(outputs)


class MarianDecoderStepGraph(nn.Module):
    """One decoder token from flat self-attention caches and precomputed cross-attention keys/values."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.layers = len(model.get_decoder().layers)

    def forward(self, decoder_input_ids: torch.Tensor, attention_mask: torch.Tensor,
                *caches: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers import EncoderDecoderCache

        cross, past = caches[: 2 * self.layers], caches[2 * self.layers :]
        cache = EncoderDecoderCache(dynamic_cache(past), dynamic_cache(cross))
        for layer in range(self.layers):
            cache.is_updated[layer] = True  # the cross keys/values are given: never recompute them
        # The decoder reads only the shape of the encoder states (B, S, .) once the cross cache is filled.
        placeholder = attention_mask.unsqueeze(-1).to(cross[0].dtype)  # (B, S, 1)
        output = self.model(encoder_outputs=(placeholder,), attention_mask=attention_mask,
                            decoder_input_ids=decoder_input_ids, past_key_values=cache, use_cache=True)
        return (output.logits[:, -1], *flat_cache(output.past_key_values.self_attention_cache))


class MarianOnnxConfig(OnnxFamilyConfig):
    """Graphs and runner settings of ``MarianMTModel``."""

    kind = "seq2seq"

    def _shape(self) -> tuple[int, int, int]:
        config = self.model.config
        return config.decoder_layers, config.decoder_attention_heads, config.d_model // config.decoder_attention_heads

    def graphs(self) -> list[OnnxGraph]:
        use_eager_attention(self.model)
        layers, heads, head_dim = self._shape()
        pad = self.model.config.pad_token_id or 0
        source = {"input_ids": torch.tensor([[5, 6, 7, 8], [5, 6, pad, pad]]),
                  "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])}
        cross_names = [name.replace("past_", "cross_") for name in cache_names(layers)]
        past_names = cache_names(layers)
        encoder = MarianEncoderGraph(self.model)
        with torch.no_grad():
            cross = encoder(**source)
        source_axes = {"input_ids": {0: "batch", 1: "source"}, "attention_mask": {0: "batch", 1: "source"}}
        cross_axes = {name: {0: "batch", 2: "source"} for name in cross_names}
        encoder_graph = OnnxGraph("encoder.onnx", encoder, source, cross_names, {**source_axes, **cross_axes})
        step_inputs = {"decoder_input_ids": torch.tensor([[3], [4]]), "attention_mask": source["attention_mask"],
                       **dict(zip(cross_names, cross, strict=True))}
        for name in past_names:
            step_inputs[name] = torch.randn(2, heads, 3, head_dim)  # a non-empty past, so the concat is traced
        axes = {"decoder_input_ids": {0: "batch"}, "logits": {0: "batch"}, **source_axes, **cross_axes}
        for name in past_names:
            axes[name] = {0: "batch", 2: "past"}
            axes[f"next_{name}"] = {0: "batch", 2: "past_and_token"}
        step_graph = OnnxGraph("decoder_step.onnx", MarianDecoderStepGraph(self.model), step_inputs,
                               ["logits", *[f"next_{n}" for n in past_names]], axes)
        return [encoder_graph, step_graph]

    def runner_config(self) -> dict[str, Any]:
        from .rnn_seq2seq import generation_settings

        layers, heads, head_dim = self._shape()
        config, generation = self.model.config, self.model.generation_config
        past_names = cache_names(layers)
        return {
            "graphs": {"encoder": "encoder.onnx", "decoder_step": "decoder_step.onnx"},
            "state_names": past_names,
            "state_shapes": {name: ["batch", heads, 0, head_dim] for name in past_names},
            "memory_names": ["attention_mask", *[n.replace("past_", "cross_") for n in past_names]],
            "pad_token_id": config.pad_token_id or 0,
            "eos_token_id": generation.eos_token_id if generation.eos_token_id is not None else config.eos_token_id,
            "decoder_start_token_id": config.decoder_start_token_id,
            "generation": generation_settings(self.model),
        }

    def default_texts(self) -> list[str]:
        from .rnn_seq2seq import RnnSeq2SeqOnnxConfig

        return RnnSeq2SeqOnnxConfig.default_texts(self)

    def check_parity(self, runner: Any, texts: list[str]) -> ParityReport:
        from .rnn_seq2seq import check_generation_parity

        return check_generation_parity(self, runner, texts, seq2seq=True)
