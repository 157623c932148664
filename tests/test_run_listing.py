"""`nlpipe runs [DIR]` / `nlpipe runs show RUN` (nlpipe/run_listing.py): status, setup and scores of run folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fake_checkpoints import write_intact_checkpoint

from nlpipe.errors import NlpipeError
from nlpipe.run_listing import format_listing, latest_checkpoint_state, list_runs, read_run
from nlpipe.training.checkpointing import latest_checkpoint

REPO = Path(__file__).resolve().parents[1]
RECIPE = {"name": "ner-bilstm", "task": "token-classification", "model": {"type": "rnn_tagger"},
          "eval": {"metric": "f1"}}


def _finished(run: Path, f1: float = 81.5) -> Path:
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text(yaml.safe_dump(RECIPE))
    (run / "run_info.json").write_text(json.dumps({"task": "token-classification", "data": {"source": "sample"}}))
    (run / "metrics.json").write_text(json.dumps({
        "validation": {"f1": 80.0, "precision": 79.0}, "test": {"f1": f1, "precision": 80.1},
        "train": {"wall_s": 125.0, "steps": 40, "epochs": 2.0, "tokens_per_s": 1000.0}, "selection_metric": "f1"}))
    (run / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"step": 10, "loss": 1.5}, {"step": 20, "loss": 1.0, "split": "validation", "f1": 50.0},
        {"step": 40, "loss": 0.5, "split": "validation", "f1": 80.0}]))
    return run


def _resumable(run: Path, step: int = 16) -> Path:
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text(yaml.safe_dump(RECIPE))
    (run / "train_log.jsonl").write_text(json.dumps({"step": 8, "loss": 2.0}) + "\n")
    write_intact_checkpoint(run / "checkpoints", step, {"train_seconds": 30.0, "best_metric": 42.0})
    return run


def test_statuses_scores_and_malformed_folders(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    _finished(runs / "done")
    _resumable(runs / "half")
    (runs / "crashed").mkdir(parents=True)
    (runs / "crashed" / "recipe.yaml").write_text(yaml.safe_dump(RECIPE))  # started, no checkpoint
    broken = _finished(runs / "broken")
    (broken / "metrics.json").write_text("{not json")
    _finished(runs / "experiment" / "runs" / "nested")  # runs inside a plain folder are found too
    (runs / "notes").mkdir()  # not a run folder: ignored

    listing = list_runs(runs)
    by_name = {r.run_dir.name: r for r in listing.runs}
    assert set(by_name) == {"done", "half", "crashed", "nested"}
    assert by_name["done"].status == "finished" and by_name["done"].score == 81.5
    assert by_name["done"].score_split == "test" and by_name["done"].data == "sample"
    assert by_name["half"].status == "resumable" and by_name["half"].steps == 16 and by_name["half"].score == 42.0
    assert by_name["crashed"].status == "interrupted" and by_name["crashed"].model == "rnn_tagger"
    assert len(listing.notes) == 1 and "broken" in listing.notes[0] and "metrics.json" in listing.notes[0]
    table = format_listing(listing)
    done_line = next(line for line in table.splitlines() if "/done " in line)
    assert "finished" in done_line and "f1 81.50" in done_line and "2m05s" in done_line


def test_resumable_means_what_resume_accepts(tmp_path: Path) -> None:
    """The listing's checkpoint rule is the training loop's own (`latest_checkpoint`): the reference."""
    good = _resumable(tmp_path / "good")
    incomplete = _resumable(tmp_path / "incomplete")
    (incomplete / "checkpoints" / "step-00000016" / "trainer_state.json").unlink()  # killed while writing
    dangling = _resumable(tmp_path / "dangling")
    (dangling / "checkpoints" / "latest").write_text("step-00000099")
    for run in (good, incomplete, dangling):
        assert (latest_checkpoint_state(run) is not None) == (latest_checkpoint(run / "checkpoints") is not None)
    assert read_run(good).status == "resumable"
    assert read_run(incomplete).status == "interrupted"
    # A pointer naming a missing checkpoint: --resume falls back to the newest intact one, so it is resumable.
    assert read_run(dangling).status == "resumable"


def test_read_run_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(NlpipeError, match="no such run folder"):
        read_run(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(NlpipeError, match="not a run folder"):
        read_run(tmp_path / "plain")
    with pytest.raises(NlpipeError, match="no such folder"):
        list_runs(tmp_path / "missing")


def test_cli_runs_and_runs_show(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    _finished(runs / "done")
    bad = _finished(runs / "bad")
    (bad / "run_info.json").write_text("[]")
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def cli(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "nlpipe", *args], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        return result

    listed = cli("runs")  # default folder: runs/
    assert listed.stdout.splitlines()[0].split()[:3] == ["RUN", "STATUS", "TASK"]
    assert "runs/done" in listed.stdout and "runs/bad" not in listed.stdout
    assert "note: skipped runs/bad" in listed.stderr
    assert cli("runs", "runs").stdout == listed.stdout and cli("runs", "list", "runs").stdout == listed.stdout
    shown = cli("runs", "show", "runs/done").stdout
    f1_row = next(line.split() for line in shown.splitlines() if line.split()[:1] == ["f1"])
    assert f1_row == ["f1", "80.00", "81.50"]  # validation, test
    assert (runs / "done" / "training_curve.png").stat().st_size > 1000 and "training_curve.png" in shown
    assert json.loads(cli("runs", "show", "runs/done", "--json").stdout)["test"]["f1"] == 81.5
