"""The training loop's own accounting (`nlpipe.training.loop`); resume, budgets and averaging have their own files."""

from __future__ import annotations

import json
import time
from pathlib import Path

from nlpipe.run import run_recipe
from nlpipe.training import loop

TINY = ["data.max_train_examples=200", "data.max_eval_examples=30", "model.hidden_size=16", "model.embedding_dim=16",
        "train.max_epochs=1", "train.batch_size=16", "train.early_stopping_patience=null"]


def test_tokens_per_s_leaves_out_checkpoint_writing(tmp_path: Path, monkeypatch) -> None:
    """Checkpoints written at evaluations and every N steps are pauses, like the evaluations: a slow disk must not
    show up as slow training (tokens/s) or as slow steps in a time budget's plan."""
    delay, written = 1.0, []
    original = loop.save_checkpoint

    def slow_save(*args, **kwargs):
        time.sleep(delay)
        written.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(loop, "save_checkpoint", slow_save)
    run_dir = tmp_path / "run"
    run_recipe("ner-bilstm", [*TINY, "train.eval_every_steps=6", "train.checkpoint_every_steps=4"], data="sample",
               output_dir=run_dir, progress=False)
    train = json.loads((run_dir / "metrics.json").read_text())["train"]
    assert len(written) >= 3  # at evaluations and in between
    not_training = train["wall_s"] - train["tokens"] / train["tokens_per_s"]
    assert not_training >= delay * len(written)  # every slow write counted as a pause, none as training


def test_steps_after_the_last_validation_are_validated_and_can_win(tmp_path: Path, monkeypatch) -> None:
    """A run that reaches max_epochs between two validations validates its final weights too, and keeps them when
    they score best (with a decaying schedule the last steps are often the best ones)."""
    from nlpipe.tasks.token_classification import TokenClassificationTask

    real_evaluate = TokenClassificationTask.evaluate
    scores = iter(range(10, 1000, 10))  # every validation better than the one before it

    def evaluate(self, *args, **kwargs):
        return {**real_evaluate(self, *args, **kwargs), "f1": float(next(scores))}

    monkeypatch.setattr(TokenClassificationTask, "evaluate", evaluate)
    run_dir = tmp_path / "run"
    run_recipe("ner-bilstm", [*TINY, "train.eval_every_steps=4"], data="sample", output_dir=run_dir, progress=False)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    steps = metrics["train"]["steps"]
    validated = [r["step"] for r in map(json.loads, (run_dir / "train_log.jsonl").read_text().splitlines())
                 if r.get("split") == "validation"]
    assert steps % 4 != 0  # the epoch ends between two validations (else this test checks nothing)
    assert validated == [*range(4, steps, 4), steps]  # every 4 steps, and the final weights once
    assert metrics["train"]["best_step"] == steps
