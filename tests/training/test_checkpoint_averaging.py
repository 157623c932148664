"""Checkpoint averaging (``train.average_checkpoints``): the mean of the weights at the last N validations.

The average is checked against a brute-force mean of the snapshot files, the selection against the scores the run
reports, and the bookkeeping (which snapshots survive pruning and a resume) against the steps it logged. Exactness
across a SIGKILL and --resume with averaging on is covered by tests/training/test_resume.py, whose runs average.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, load_model

from nlpipe.errors import NlpipeError
from nlpipe.run import run_recipe
from nlpipe.training import checkpoint_averaging as averaging

TINY = ["data.max_train_examples=400", "data.max_eval_examples=60", "model.hidden_size=32", "model.embedding_dim=32",
        "train.max_epochs=3", "train.batch_size=16", "train.learning_rate=0.01", "train.eval_every_steps=10",
        "train.early_stopping_patience=null"]


class Tied(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(7, 4)
        self.out = torch.nn.Linear(4, 7, bias=True)
        self.out.weight = self.embed.weight  # shared, as in tied-embedding models
        self.register_buffer("count", torch.zeros((), dtype=torch.long))


def test_average_is_the_elementwise_mean_and_loads_into_tied_models(tmp_path: Path) -> None:
    models = []
    for i in range(3):
        torch.manual_seed(i)
        model = Tied()
        model.count.fill_(i)
        averaging.save_snapshot(tmp_path, model, step=10 * (i + 1))
        models.append(model)
    files = [path for _, path in averaging.snapshots(tmp_path)]
    assert [step for step, _ in averaging.snapshots(tmp_path)] == [10, 20, 30]
    averaging.average(files, tmp_path / "mean.safetensors")
    merged = Tied()
    load_model(merged, str(tmp_path / "mean.safetensors"))
    for name, tensor in merged.named_parameters():
        expected = torch.stack([dict(m.named_parameters())[name].detach() for m in models]).mean(0)
        torch.testing.assert_close(tensor.detach(), expected)
    assert merged.out.weight is merged.embed.weight
    assert int(merged.count) == 2  # integer buffers come from the newest snapshot, not a mean


def test_pruning_and_resume_keep_the_right_snapshots(tmp_path: Path) -> None:
    for step in (5, 10, 15, 20, 25):
        averaging.save_snapshot(tmp_path, Tied(), step)
    averaging.prune(tmp_path, 3)
    assert [s for s, _ in averaging.snapshots(tmp_path)] == [15, 20, 25]
    averaging.drop_after(tmp_path, 20)  # a resume from the checkpoint of step 20: step 25 is trained again
    assert [s for s, _ in averaging.snapshots(tmp_path)] == [15, 20]
    assert not list(averaging.snapshot_dir(tmp_path).glob(".*"))  # no temporary files left


def test_window_ending_at_the_best_step_and_what_pruning_keeps_for_it(tmp_path: Path) -> None:
    steps = [10, 20, 30, 40, 50, 60, 70]
    for step in steps:
        averaging.save_snapshot(tmp_path, Tied(), step)
    found = averaging.snapshots(tmp_path)
    # brute force: the `count` steps up to and including the best one, or the newest `count`
    for count in (2, 3, 5):
        for best in steps:
            assert [s for s, _ in averaging.window(found, count, best)] == [s for s in steps if s <= best][-count:]
        assert [s for s, _ in averaging.window(found, count)] == steps[-count:]
    averaging.prune(tmp_path, 3, until_step=30)  # the best's window, and the newest 2 a later best would need
    assert [s for s, _ in averaging.snapshots(tmp_path)] == [10, 20, 30, 60, 70]
    averaging.save_snapshot(tmp_path, Tied(), 80)  # a new best at 80: its window is the newest 3
    averaging.prune(tmp_path, 3, until_step=80)
    assert [s for s, _ in averaging.snapshots(tmp_path)] == [60, 70, 80]
    averaging.prune(tmp_path, 3, until_step=None)
    assert [s for s, _ in averaging.snapshots(tmp_path)] == [60, 70, 80]


def test_run_averages_the_validations_ending_at_the_best_one(tmp_path: Path, monkeypatch) -> None:
    """``average_checkpoints_until: best``: a run whose validation peaks early averages around the peak."""
    from nlpipe.tasks.token_classification import TokenClassificationTask

    calls = itertools.count()
    real_evaluate = TokenClassificationTask.evaluate

    def evaluate(self, *args, **kwargs):  # validation F1 peaks at the 2nd validation and never comes back
        metrics = real_evaluate(self, *args, **kwargs)
        return {**metrics, "f1": 40.0 if next(calls) == 1 else 10.0}

    averaged: list[tuple[list[int], list[int]]] = []  # (steps averaged, steps on disk)
    original = averaging.average

    def spy(files: list[Path], out: Path) -> None:
        steps = [int(averaging.SNAPSHOT.fullmatch(f.name).group(1)) for f in files]
        averaged.append((steps, [s for s, _ in averaging.snapshots(files[0].parent.parent)]))
        original(files, out)

    monkeypatch.setattr(TokenClassificationTask, "evaluate", evaluate)
    monkeypatch.setattr(averaging, "average", spy)
    run_dir = tmp_path / "run"
    run_recipe("ner-bilstm", [*TINY, "train.average_checkpoints=2", "train.average_checkpoints_until=best"],
               data="sample", output_dir=run_dir, progress=False)
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    validation_steps = [r["step"] for r in log if r.get("split") == "validation"]
    assert len(validation_steps) >= 4  # the last two validations are not the best's window
    record = json.loads((run_dir / "metrics.json").read_text())["train"]["checkpoint_average"]
    assert record["best_single_step"] == validation_steps[1] and record["best_single_validation"] == 40.0
    assert record["steps"] == validation_steps[:2]  # the best and the one before it, not the last two
    # on disk when training ended: the best's window and the newest one (what a later best would have needed)
    assert averaged == [(validation_steps[:2], [*validation_steps[:2], validation_steps[-1]])]


def test_run_averages_the_last_validations_and_keeps_the_better_model(tmp_path: Path, monkeypatch) -> None:
    averaged: list[tuple[list[Path], dict]] = []  # what was averaged, read before the run removes checkpoints/
    original = averaging.average

    def spy(files: list[Path], out: Path) -> None:
        averaged.append((files, [load_file(str(f)) for f in files], averaging.snapshots(files[0].parent.parent)))
        original(files, out)

    monkeypatch.setattr(averaging, "average", spy)
    run_dir = tmp_path / "run"
    run_recipe("ner-bilstm", [*TINY, "train.average_checkpoints=3"], data="sample", output_dir=run_dir,
               progress=False)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    record = metrics["train"]["checkpoint_average"]
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    validations = [r for r in log if r.get("split") == "validation"]
    assert len(validations) >= 4
    assert record["steps"] == [r["step"] for r in validations[-3:]]  # the newest three, oldest first
    [(files, weights, on_disk)] = averaged
    assert [s for s, _ in on_disk] == record["steps"]  # older ones were pruned
    assert [path for _, path in on_disk] == files
    best_single = max(r["f1"] for r in validations)
    assert record["best_single_validation"] == best_single
    assert record["best_single_step"] == next(r["step"] for r in validations if r["f1"] == best_single)
    assert best_single > 5  # a model that learned something, so the selection is not a tie of zeros
    final = load_file(str(run_dir / "model.safetensors"))
    if record["kept"]:
        # the saved model is the brute-force mean of the three files, and scores what the average scored
        assert record["validation"] >= best_single
        assert metrics["validation"]["f1"] == pytest.approx(record["validation"], abs=1e-6)
        for name, tensor in final.items():
            if tensor.is_floating_point():
                torch.testing.assert_close(tensor, torch.stack([w[name] for w in weights]).mean(0))
    else:  # the best single model stays
        assert record["validation"] < best_single
        assert metrics["validation"]["f1"] == pytest.approx(best_single, abs=1e-6)
        assert metrics["train"]["best_validation"] == best_single


def test_a_worse_average_leaves_the_best_single_model(tmp_path: Path, monkeypatch) -> None:
    def zeros(files: list[Path], out: Path) -> None:  # an average that cannot tag anything
        from safetensors.torch import save_file

        save_file({k: torch.zeros_like(v) for k, v in load_file(str(files[-1])).items()}, str(out))

    monkeypatch.setattr(averaging, "average", zeros)
    run_dir = tmp_path / "run"
    run_recipe("ner-bilstm", [*TINY, "train.average_checkpoints=2"], data="sample", output_dir=run_dir,
               progress=False)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    record = metrics["train"]["checkpoint_average"]
    assert not record["kept"] and record["validation"] < metrics["train"]["best_validation"]
    # the saved model is the best single one: it scores the best validation again
    assert metrics["validation"]["f1"] == pytest.approx(metrics["train"]["best_validation"], abs=1e-6)
    assert any(float(t.abs().sum()) > 0 for t in load_file(str(run_dir / "model.safetensors")).values())


def test_average_checkpoints_off_writes_no_snapshots(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_recipe("ner-bilstm", [*TINY, "train.max_epochs=1"], data="sample", output_dir=run_dir, progress=False)
    assert "checkpoint_average" not in json.loads((run_dir / "metrics.json").read_text())["train"]
    assert not averaging.snapshot_dir(run_dir / "checkpoints").exists()


def test_bad_value_is_one_line() -> None:
    with pytest.raises(NlpipeError, match=r"key 'train.average_checkpoints': -1 is out of range"):
        run_recipe("ner-bilstm", ["train.average_checkpoints=-1"], data="sample")
    with pytest.raises(NlpipeError, match=r"key 'train.average_checkpoints_until': choose last or best"):
        run_recipe("ner-bilstm", ["train.average_checkpoints_until=peak"], data="sample")
