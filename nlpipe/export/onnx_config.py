"""What a model family tells the shared ONNX exporter: its graphs, its runner settings and its parity check.

Like Optimum's ``OnnxConfig`` (one per architecture in ``exporters/onnx/model_configs.py``): each family
config lists the graphs to export (module, example inputs, input/output names, dynamic axes) and the
settings ``onnx_runner.py`` reads from ``onnx_config.json``; ``onnx_export.export_onnx`` does the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn


@dataclass
class OnnxGraph:
    """One ONNX file: `module(**example_inputs)` traced with these names and dynamic axes."""

    file_name: str
    module: nn.Module
    example_inputs: dict[str, torch.Tensor]  # in the order of `module.forward`'s arguments
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)


@dataclass
class ParityReport:
    """How the exported folder's runner compares with PyTorch (`pipeline()` / `generate()`) on some texts."""

    texts: int
    identical: int  # texts whose entities / greedy tokens are identical
    max_abs_logit_diff: float
    logit_tolerance: float
    mismatches: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.identical == self.texts and self.max_abs_logit_diff <= self.logit_tolerance

    def as_dict(self) -> dict[str, Any]:
        return {"texts": self.texts, "identical": self.identical, "max_abs_logit_diff": self.max_abs_logit_diff,
                "logit_tolerance": self.logit_tolerance, "ok": self.ok, "mismatches": self.mismatches[:5]}


class OnnxFamilyConfig:
    """Base of the per-family export configs.

    Args:
        model: the loaded PyTorch model (eval mode).
        tokenizer: its tokenizer.
        run_dir: the run folder (the parity check runs ``pipeline()`` on it).
        recipe: the run's `Recipe`.
    """

    kind: str = ""  # the runner class in onnx_runner.RUNNERS
    opset: int = 17
    # float32 ONNX Runtime against PyTorch: same math, different kernels and summation orders.
    logit_tolerance: float = 1e-3

    def __init__(self, model: Any, tokenizer: Any, run_dir: Path, recipe: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.run_dir = Path(run_dir)
        self.recipe = recipe

    def graphs(self) -> list[OnnxGraph]:
        """The graphs to export."""
        raise NotImplementedError

    def runner_config(self) -> dict[str, Any]:
        """Family settings for ``onnx_config.json`` (``graphs`` file names, labels, special ids, ...)."""
        raise NotImplementedError

    def default_texts(self) -> list[str]:
        """Texts the export is checked on when none are given: the built-in sample's test sentences."""
        raise NotImplementedError

    def check_parity(self, runner: Any, texts: list[str]) -> ParityReport:
        """Compare `runner` (an `onnx_runner` model on the exported folder) with PyTorch on `texts`."""
        raise NotImplementedError
