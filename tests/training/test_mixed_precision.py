"""``train.mixed_precision=bf16`` is a recipe switch that works for both model families.

bf16 is fast on GPUs and on CPUs with AMX units, slow elsewhere (docs/scaling.md). Here we check that
two optimizer steps of an RNN recipe and a Transformer recipe really run under bf16 autocast (the
classifier computes in bfloat16), give finite losses, that the final scores are computed in float32,
and that a complete run folder is written.
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
    assert seen[-1] == torch.float32  # the reported test scores come from the full-precision model
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert result.metrics["train"]["steps"] == 2
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]["f1"] >= 0
    assert (tmp_path / "run" / "model.safetensors").is_file()


@pytest.mark.parametrize(("amx", "avx512_bf16", "expected"),
                         [(True, True, "bf16"), (True, False, "bf16"), (False, True, "bf16"), (False, False, "no")])
def test_auto_mixed_precision_is_bf16_only_where_the_cpu_multiplies_bf16_in_hardware(
    amx: bool, avx512_bf16: bool, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nlpipe.run import resolve_mixed_precision

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    assert resolve_mixed_precision("auto", cpu=True) == expected
    assert resolve_mixed_precision("no", cpu=True) == "no"
    assert resolve_mixed_precision("bf16", cpu=True) == "bf16"  # an explicit choice is kept
