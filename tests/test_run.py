"""run_recipe called several times in one process (Python users, `nlpipe compare --recipes`)."""

from __future__ import annotations

from pathlib import Path

import pytest

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


def test_python_api_errors_name_keywords_not_cli_flags(tmp_path: Path, monkeypatch) -> None:
    """`nlpipe.run_recipe` on a folder that holds a run says overwrite=True / output_dir=, not --overwrite."""
    import nlpipe
    from nlpipe.errors import NlpipeError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "ner-bilstm").mkdir(parents=True)
    (tmp_path / "runs" / "ner-bilstm" / "metrics.json").write_text("{}")
    (tmp_path / "runs" / "ner-bilstm" / "run_info.json").write_text('{"nlpipe_run_folder": 1}')  # a run of nlpipe's
    with pytest.raises(NlpipeError) as info:
        nlpipe.run_recipe("ner-bilstm", ["train.max_epochs=3"], data="sample")
    message = str(info.value)
    assert "folder already holds a run" in message
    assert "overwrite=True" in message and "output_dir=" in message and "--" not in message
    # A command line quoted as advice stays a command line.
    quoted = NlpipeError("interrupted; resume with: nlpipe run recipe x --output-dir y --resume").for_python()
    assert str(quoted).endswith("nlpipe run recipe x --output-dir y --resume")
