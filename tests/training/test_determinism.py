"""Reproducibility: `train.deterministic: true` switches torch to deterministic kernels for the
training only, and a kernel without a deterministic implementation is one clear line.

(The source of the 2-thread difference found on real data, the char encoder's gather, is tested in
tests/models/test_char_encoder.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nlpipe.errors import NlpipeError
from nlpipe.training.loop import deterministic_kernels


def test_deterministic_kernels_are_on_only_inside() -> None:
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_kernels(True):
        assert torch.are_deterministic_algorithms_enabled()
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_kernels(False):
        assert not torch.are_deterministic_algorithms_enabled()


def test_a_kernel_without_a_deterministic_implementation_is_one_line() -> None:
    with pytest.raises(NlpipeError) as caught, deterministic_kernels(True, "r.yaml"):
        raise RuntimeError("scatter_add_cuda_kernel does not have a deterministic implementation, but you set "
                           "'torch.use_deterministic_algorithms(True)'.\nmore")
    message = str(caught.value)
    assert message.startswith("r.yaml: key 'train.deterministic': scatter_add_cuda_kernel does not have")
    assert message.endswith("set train.deterministic: false (runs are then reproducible only up to such kernels)")
    assert "\n" not in message
    assert not torch.are_deterministic_algorithms_enabled()


def test_deterministic_run_trains_and_records_the_setting(tmp_path: Path) -> None:
    from nlpipe.recipe import load_recipe
    from nlpipe.run import run_recipe

    recipe = load_recipe("ner-bilstm", ["data.max_train_examples=64", "data.max_eval_examples=16",
                                        "model.hidden_size=8", "model.embedding_dim=8", "train.max_steps=3",
                                        "train.deterministic=true"])
    result = run_recipe(recipe, data="sample", output_dir=tmp_path / "run", progress=False)
    assert result.metrics["train"]["steps"] == 3
    assert "deterministic: true" in (tmp_path / "run" / "recipe.yaml").read_text()
    assert not torch.are_deterministic_algorithms_enabled()
