"""ONNX export config of the recurrent language model (``nlpipe_rnn_lm``): one graph that reads tokens from a
state and returns the next state, so a prompt is read in one call and each new token costs one step.

``model.onnx``: ``input_ids`` (B, T), ``hidden`` (L, B, H) and, for LSTMs, ``cell`` → ``logits`` (B, T, V),
``next_hidden`` and ``next_cell``. Start from zeros (what the model does without a ``cache``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .onnx_config import OnnxFamilyConfig, OnnxGraph, ParityReport
from .rnn_seq2seq import check_generation_parity


class RnnLmStepGraph(nn.Module):
    """`RnnForCausalLM.forward` from an explicit state (no padding: the runner feeds one sequence at a time)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.is_lstm = model.config.cell == "lstm"

    def forward(self, input_ids: torch.Tensor, hidden: torch.Tensor, cell: torch.Tensor | None = None):
        state = (hidden, cell) if self.is_lstm else hidden
        output = self.model(input_ids=input_ids, cache=state, use_cache=True, return_dict=True)
        next_state = output.cache if self.is_lstm else (output.cache,)
        return (output.logits, *next_state)


class RnnLmOnnxConfig(OnnxFamilyConfig):
    """Graphs and runner settings of ``nlpipe_rnn_lm``."""

    kind = "causal-lm"

    def _state_names(self) -> list[str]:
        return ["hidden", "cell"] if self.model.config.cell == "lstm" else ["hidden"]

    def graphs(self) -> list[OnnxGraph]:
        config = self.model.config
        names = self._state_names()
        inputs = {"input_ids": torch.tensor([[5, 6, 7], [8, 9, 10]])}
        for name in names:
            inputs[name] = torch.zeros(config.num_layers, 2, config.hidden_size)
        axes = {"input_ids": {0: "batch", 1: "tokens"}, "logits": {0: "batch", 1: "tokens"}}
        for name in names:
            axes[name] = axes[f"next_{name}"] = {1: "batch"}
        return [OnnxGraph("model.onnx", RnnLmStepGraph(self.model), inputs,
                          ["logits", *[f"next_{n}" for n in names]], axes)]

    def runner_config(self) -> dict[str, Any]:
        config = self.model.config
        generation = self.model.generation_config
        settings = lm_generation_settings(self.model, self.recipe)
        return {
            "graphs": {"model": "model.onnx"},
            "state_names": self._state_names(),
            "state_shapes": {n: [config.num_layers, "batch", config.hidden_size] for n in self._state_names()},
            "eos_token_id": generation.eos_token_id if generation.eos_token_id is not None else config.eos_token_id,
            "generation": settings,
        }

    def default_texts(self) -> list[str]:
        from ..data.samples import make_sample

        return [" ".join(example["text"].split()[:3]) for example in make_sample("lm")["test"][:12]]

    def check_parity(self, runner: Any, texts: list[str]) -> ParityReport:
        """Greedy `generate()` ids vs the runner's, and the logits along that path."""
        return check_generation_parity(self, runner, texts, seq2seq=False)


LM_GENERATION_KEYS = ("max_new_tokens", "do_sample", "top_k", "temperature")


def lm_generation_settings(model: Any, recipe: Any) -> dict[str, Any]:
    """The runner's continuation settings: the model's generation config, overridden by the recipe's
    ``generate`` section as the causal-lm task passes it to ``generate()`` (what ``nlpipe predict`` and
    ``nlpipe serve`` answer with)."""
    generation = model.generation_config
    settings = {k: getattr(generation, k) for k in LM_GENERATION_KEYS if getattr(generation, k, None) is not None}
    if recipe is not None and getattr(recipe, "task", None) == "causal-lm":
        from ..tasks import get_task

        settings.update({k: v for k, v in get_task(recipe).generation_kwargs().items()
                         if k in LM_GENERATION_KEYS and v is not None})
    return settings
