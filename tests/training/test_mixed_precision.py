"""``train.mixed_precision=bf16`` is a recipe switch that works for both model families.

On this CPU (no bf16 units) bf16 is slower, not faster: it is meant for GPUs (docs/scaling.md). Here
we check that two optimizer steps of an RNN recipe and a Transformer recipe really run under bf16
autocast (the classifier computes in bfloat16), give finite losses and write a complete run folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

TINY = {
    "ner-bilstm": ["model.hidden_size=16", "model.embedding_dim=16"],
    "ner-bert": ["model.hidden_size=32", "model.num_hidden_layers=1", "model.num_attention_heads=2",
                 "model.intermediate_size=64"],
}


@pytest.mark.parametrize("recipe", list(TINY))
def test_bf16_runs(recipe: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nlpipe.run import run_recipe
    from nlpipe.tasks.token_classification import TokenClassificationTask

    seen: list[torch.dtype] = []
    losses: list[float] = []

    def loss(self, model, batch):  # noqa: ANN001
        classifier = getattr(model, "module", model).classifier
        if not classifier._forward_hooks:  # Accelerate casts the model's outputs back to float32: look inside
            classifier.register_forward_hook(lambda module, args, output: seen.append(output.dtype))
        out = model(**batch)
        losses.append(float(out.loss.detach()))
        return out.loss

    monkeypatch.setattr(TokenClassificationTask, "loss", loss)
    overrides = ["train.mixed_precision=bf16", "train.max_steps=2", "train.batch_size=16",
                 "data.max_train_examples=64", "data.max_eval_examples=16", *TINY[recipe]]
    result = run_recipe(recipe, overrides, data="sample", output_dir=tmp_path / "run", progress=False)
    assert seen[:2] == [torch.bfloat16, torch.bfloat16]  # training steps ran under bf16 autocast
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert result.metrics["train"]["steps"] == 2
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]["f1"] >= 0
    assert (tmp_path / "run" / "model.safetensors").is_file()
