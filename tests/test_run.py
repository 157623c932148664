"""run_recipe called several times in one process (Python users, `nlpipe compare --recipes`)."""

from __future__ import annotations

from pathlib import Path

from nlpipe.run import run_recipe

TINY = ["train.max_steps=2", "data.max_train_examples=64", "data.max_eval_examples=8", "model.hidden_size=8",
        "model.embedding_dim=8", "eval.splits=[test]"]


def test_runs_with_different_accelerate_settings_in_one_process(tmp_path: Path) -> None:
    from accelerate.state import AcceleratorState, GradientState

    run_recipe("ner-bilstm", TINY, data="sample", output_dir=tmp_path / "a", progress=False)
    assert AcceleratorState().mixed_precision == "no"
    second = run_recipe("ner-bilstm", [*TINY, "train.mixed_precision=bf16", "train.gradient_accumulation_steps=2"],
                        data="sample", output_dir=tmp_path / "b", progress=False)
    assert AcceleratorState().mixed_precision == "bf16"
    assert GradientState().num_steps == 2
    assert second.metrics["train"]["steps"] == 2
