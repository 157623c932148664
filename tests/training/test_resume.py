"""Never lose work: a run killed with SIGKILL mid-epoch and resumed reaches exactly the metrics of an
uninterrupted run; Ctrl-C saves a checkpoint and says how to resume; a NaN loss stops the run with the
last good checkpoint intact; unusable output folders fail before training.

The kill is real: the CLI runs in a subprocess through a small driver that, once the checkpoint of
step 16 is written (mid-epoch 2 of 2, dropout on), sends itself SIGKILL (or SIGINT) during the third batch after it,
so work after the checkpoint is lost and must be redone identically.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nlpipe.errors import NlpipeError

RECIPE_ARGS = [
    "run", "recipe", "ner-bilstm", "--data", "sample", "--no-progress",
    "data.max_train_examples=200", "data.max_eval_examples=40", "model.hidden_size=16",
    "model.embedding_dim=16", "model.dropout=0.3", "model.embedding_dropout=0.1", "train.max_epochs=2",
    "train.batch_size=16", "train.learning_rate=0.01", "train.checkpoint_every_steps=4",
    "train.log_every_steps=1", "train.early_stopping_patience=null",
]
KILL_AFTER_CHECKPOINT = 16  # 13 batches per epoch: step 16 is the 3rd batch of epoch 2

DRIVER = r"""
import os, signal, sys
import nlpipe.training.loop as loop

mode, at = sys.argv[1], int(sys.argv[2])
armed = {"on": False, "batches": 0}
original_save, original_any = loop.save_checkpoint, loop._any_process

def save_checkpoint(root, model, optimizer, scheduler, trainer_state, *args, **kwargs):
    path = original_save(root, model, optimizer, scheduler, trainer_state, *args, **kwargs)
    if mode != "none" and trainer_state["global_step"] == at:
        armed["on"] = True
    return path

def any_process(accelerator, *flags):  # called once per batch, after the forward pass
    if armed["on"]:
        armed["batches"] += 1
        if armed["batches"] == 3:
            os.kill(os.getpid(), signal.SIGKILL if mode == "kill" else signal.SIGINT)
    return original_any(accelerator, *flags)

loop.save_checkpoint, loop._any_process = save_checkpoint, any_process
sys.argv = ["nlpipe", *sys.argv[3:]]
from nlpipe.cli import main
main()
"""


def _start(tmp_path: Path, name: str, mode: str, *extra: str, recipe_args: list[str] = RECIPE_ARGS,
           kill_at: int = KILL_AFTER_CHECKPOINT) -> subprocess.Popen:
    # Exact equality of two trainings is only meaningful with determinism forced: both runs on this machine, one
    # thread each (same kernels, same summation order), same seed. Across machines or thread counts they may differ.
    env = {**os.environ, "NLPIPE_CACHE": str(tmp_path / f"cache-{name}"), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, mode, str(kill_at), *recipe_args,
         "--output-dir", str(tmp_path / name), *extra],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=400)
    return proc.returncode, out, err


def _comparable(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for timing in ("wall_s", "tokens_per_s"):
        metrics["train"].pop(timing)
    return metrics


def _log(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in records]


def test_sigkill_then_resume_equals_uninterrupted_and_ctrl_c_saves(tmp_path: Path) -> None:
    straight = _start(tmp_path, "straight", "none")
    killed = _start(tmp_path, "killed", "kill")
    interrupted = _start(tmp_path, "interrupted", "int")

    code, _, err = _finish(killed)
    assert code == -9, err[-2000:]
    ckpt = tmp_path / "killed" / "checkpoints"
    state = json.loads((ckpt / (ckpt / "latest").read_text().strip() / "trainer_state.json").read_text())
    assert (state["global_step"], state["epoch"], state["batches_done"]) == (KILL_AFTER_CHECKPOINT, 1, 3)
    assert not (tmp_path / "killed" / "metrics.json").exists()
    logged_steps = [r["step"] for r in _log(tmp_path / "killed") if "loss" in r]
    assert max(logged_steps) > KILL_AFTER_CHECKPOINT  # work after the checkpoint was lost...
    resumed = _start(tmp_path, "killed", "none", "--resume")

    code, _, err = _finish(interrupted)
    assert code == 130, err[-2000:]
    last_line = err.strip().splitlines()[-1]
    assert last_line.startswith("error: interrupted at step 19; a checkpoint is in"), last_line
    assert "Resume with: nlpipe run recipe ner-bilstm" in last_line and last_line.endswith("--resume")
    assert "Traceback" not in err
    ckpt = tmp_path / "interrupted" / "checkpoints"
    assert (ckpt / "latest").read_text().strip() == "step-00000019"

    code, _, err = _finish(straight)
    assert code == 0, err[-2000:]
    code, _, err = _finish(resumed)
    assert code == 0, err[-2000:]
    assert "resumed from" in _ + err
    # ...and was redone identically: same data order, dropout masks, optimizer and schedule state.
    assert _comparable(tmp_path / "killed") == _comparable(tmp_path / "straight")
    assert _log(tmp_path / "killed") == _log(tmp_path / "straight")  # no duplicated or missing lines
    losses = [r["loss"] for r in _log(tmp_path / "straight") if "loss" in r]
    assert losses[-1] < losses[0] - 0.1  # a real training, not a constant


LM_RECIPE_ARGS = [
    "run", "recipe", "generation-lstm", "--data", "sample", "--no-progress", "data.max_train_examples=200",
    "model.hidden_size=16", "model.embedding_dim=16", "model.dropout=0.2", "train.max_epochs=2",
    "train.batch_size=4", "train.bptt_length=16", "train.checkpoint_every_steps=4", "train.log_every_steps=1",
    "train.eval_every_steps=0", "train.early_stopping_patience=null", "train.max_train_minutes=null",
]
LM_KILL_AFTER_CHECKPOINT = 40  # 32 windows per epoch: step 40 is mid-epoch 2, with a carried LSTM state


def test_lm_sigkill_mid_epoch_then_resume_continues_the_carried_state(tmp_path: Path) -> None:
    """A recurrent LM carries its state from window to window: the checkpoint must hold it, or the resumed
    run starts the rest of the epoch from a zero state and diverges from the uninterrupted one."""
    straight = _start(tmp_path, "straight", "none", recipe_args=LM_RECIPE_ARGS, kill_at=LM_KILL_AFTER_CHECKPOINT)
    killed = _start(tmp_path, "killed", "kill", recipe_args=LM_RECIPE_ARGS, kill_at=LM_KILL_AFTER_CHECKPOINT)
    code, _, err = _finish(killed)
    assert code == -9, err[-2000:]
    ckpt = tmp_path / "killed" / "checkpoints"
    step = ckpt / (ckpt / "latest").read_text().strip()
    state = json.loads((step / "trainer_state.json").read_text())
    assert (state["global_step"], state["epoch"]) == (LM_KILL_AFTER_CHECKPOINT, 1) and state["batches_done"] > 0
    from safetensors.torch import load_file

    carried = load_file(str(step / "task_state.safetensors"))
    assert set(carried) == {"state.0", "state.1"} and carried["state.0"].abs().sum() > 0  # LSTM (h, c)
    resumed = _start(tmp_path, "killed", "none", "--resume", recipe_args=LM_RECIPE_ARGS,
                     kill_at=LM_KILL_AFTER_CHECKPOINT)
    for proc in (straight, resumed):
        code, out, err = _finish(proc)
        assert code == 0, err[-2000:]
    assert _comparable(tmp_path / "killed") == _comparable(tmp_path / "straight")
    assert _log(tmp_path / "killed") == _log(tmp_path / "straight")


def _tiny(tmp_path: Path, **train: object):
    from nlpipe.recipe import load_recipe

    overrides = [a for a in RECIPE_ARGS if "=" in a] + [f"train.{k}={v}" for k, v in train.items()]
    return load_recipe("ner-bilstm", overrides)


def test_nan_loss_stops_with_last_good_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import load_file

    from nlpipe.run import run_recipe
    from nlpipe.tasks.token_classification import TokenClassificationTask

    calls = {"n": 0}
    original = TokenClassificationTask.loss

    def loss(self, model, batch):  # noqa: ANN001
        calls["n"] += 1
        value = original(self, model, batch)
        return value * math.nan if calls["n"] == 7 else value

    monkeypatch.setattr(TokenClassificationTask, "loss", loss)
    with pytest.raises(NlpipeError) as caught:
        run_recipe(_tiny(tmp_path), data="sample", output_dir=tmp_path / "run", progress=False)
    message = str(caught.value)
    assert "loss became nan at step 7" in message and "last good checkpoint" in message
    assert "\n" not in message
    ckpt = tmp_path / "run" / "checkpoints"
    latest = ckpt / (ckpt / "latest").read_text().strip()
    assert latest.name == "step-00000004"
    weights = load_file(str(latest / "model.safetensors"))
    assert all(bool(t.isfinite().all()) for t in weights.values())
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_output_dir_problems_fail_before_training(tmp_path: Path) -> None:
    from nlpipe.run import _check_output_dir

    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "metrics.json").write_text("{}")
    with pytest.raises(NlpipeError, match="already holds a run; pass --resume .* --overwrite"):
        _check_output_dir(existing, resume=False, overwrite=False)
    assert (existing / "metrics.json").exists()
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(NlpipeError, match="exists and is not a folder"):
        _check_output_dir(blocker, resume=False, overwrite=False)
    with pytest.raises(NlpipeError, match="cannot write there"):
        _check_output_dir(blocker / "run", resume=False, overwrite=False)
    with pytest.raises(NlpipeError, match="no checkpoint to resume from"):
        _check_output_dir(tmp_path / "fresh", resume=True, overwrite=False)
