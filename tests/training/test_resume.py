"""Never lose work, never resume dishonestly.

- A run killed with SIGKILL mid-epoch, or stopped with Ctrl-C (SIGINT) or SIGTERM, and resumed reaches
  exactly the metrics, log and weights of an uninterrupted run (one thread: exact equality is legitimate).
- A kill during the final evaluation does not make the resume train past ``max_steps``.
- A resume with another recipe or data source is refused before anything is written.
- A damaged checkpoint is named and the resume falls back to the newest intact one; a full disk
  during a checkpoint write leaves the previous checkpoint the one --resume uses.
- A diverging loss stops the run honestly; a run that never wrote a checkpoint does not block its rerun.

The kill is real: the CLI runs in a subprocess through a small driver that, once the checkpoint of
step 16 is written (mid-epoch 2 of 2, dropout on), sends itself SIGKILL during the third batch after it,
so work after the checkpoint is lost and must be redone identically. SIGINT/SIGTERM come from the test,
once the training log shows a step past the first checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_checkpoints import replace_trainer_state

from nlpipe.errors import NlpipeError

RECIPE_ARGS = [
    "run", "recipe", "ner-bilstm", "--data", "sample", "--no-progress",
    "data.max_train_examples=200", "data.max_eval_examples=40", "model.hidden_size=16",
    "model.embedding_dim=16", "model.dropout=0.3", "model.embedding_dropout=0.1", "train.max_epochs=2",
    "train.batch_size=16", "train.learning_rate=0.01", "train.checkpoint_every_steps=4",
    "train.log_every_steps=1", "train.early_stopping_patience=null",
    "train.average_checkpoints=2",  # the snapshots to average must survive a kill and --resume exactly too
]
KILL_AFTER_CHECKPOINT = 16  # 13 batches per epoch: step 16 is the 3rd batch of epoch 2

DRIVER = r"""
import os, signal, sys, time
import nlpipe.training.loop as loop

mode, at = sys.argv[1], int(sys.argv[2])
armed = {"on": False, "batches": 0}
original_save, original_divergence = loop.save_checkpoint, loop.divergence

def save_checkpoint(root, model, optimizer, scheduler, trainer_state, *args, **kwargs):
    path = original_save(root, model, optimizer, scheduler, trainer_state, *args, **kwargs)
    if mode in ("kill", "evalkill") and trainer_state["global_step"] == at:
        armed["on"] = True
    return path

def divergence(loss, recent):  # called once per batch, after its forward pass
    if mode == "slow":  # give the test time to send its signal mid-epoch
        time.sleep(0.1)
    if armed["on"] and mode == "kill":
        armed["batches"] += 1
        if armed["batches"] == 3:
            os.kill(os.getpid(), signal.SIGKILL)
    return original_divergence(loss, recent)

loop.save_checkpoint, loop.divergence = save_checkpoint, divergence
if mode == "evalkill":  # die in the evaluation that follows the checkpoint of step `at`
    from nlpipe.tasks.token_classification import TokenClassificationTask
    original_evaluate = TokenClassificationTask.evaluate
    def evaluate(self, *args, **kwargs):
        if armed["on"]:
            os.kill(os.getpid(), signal.SIGKILL)
        return original_evaluate(self, *args, **kwargs)
    TokenClassificationTask.evaluate = evaluate
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
    metrics.pop("eval_speed", None)  # evaluation timings (examples/s) differ run to run
    return metrics


def _log(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in records]


def _weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "model.safetensors"))


def _assert_same_run(run_dir: Path, reference: Path) -> None:
    assert _comparable(run_dir) == _comparable(reference)
    assert _log(run_dir) == _log(reference)  # no duplicated or missing lines
    ours, theirs = _weights(run_dir), _weights(reference)
    assert ours.keys() == theirs.keys()
    assert all(bool((ours[k] == theirs[k]).all()) for k in ours)


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run every interrupted one is compared with."""
    tmp_path = tmp_path_factory.mktemp("straight")
    code, _, err = _finish(_start(tmp_path, "straight", "none"))
    assert code == 0, err[-2000:]
    losses = [r["loss"] for r in _log(tmp_path / "straight") if "loss" in r]
    assert losses[-1] < losses[0] - 0.1  # a real training, not a constant
    return tmp_path / "straight"


def test_sigkill_then_resume_equals_uninterrupted(tmp_path: Path, straight: Path) -> None:
    code, _, err = _finish(_start(tmp_path, "killed", "kill"))
    assert code == -9, err[-2000:]
    ckpt = tmp_path / "killed" / "checkpoints"
    state = json.loads((ckpt / (ckpt / "latest").read_text().strip() / "trainer_state.json").read_text())
    assert (state["global_step"], state["epoch"], state["batches_done"]) == (KILL_AFTER_CHECKPOINT, 1, 3)
    assert not (tmp_path / "killed" / "metrics.json").exists()
    logged_steps = [r["step"] for r in _log(tmp_path / "killed") if "loss" in r]
    assert max(logged_steps) > KILL_AFTER_CHECKPOINT  # work after the checkpoint was lost...
    code, out, err = _finish(_start(tmp_path, "killed", "none", "--resume"))
    assert code == 0, err[-2000:]
    assert "resumed from" in out + err
    # ...and was redone identically: same data order, dropout masks, optimizer and schedule state.
    _assert_same_run(tmp_path / "killed", straight)


#: The trainer state of the first resumable checkpoints (2026-11-26), plus the smoothed loss, without which the
#: resumed log's smoothed losses would restart (training itself would not change).
FIRST_STATE_KEYS = ("global_step", "epoch", "batches_done", "best_metric", "best_step", "evals_without_improvement",
                    "train_tokens", "train_seconds", "eval_seconds", "history", "running_loss")


def test_checkpoint_of_an_older_nlpipe_resumes_exactly(tmp_path: Path, straight: Path) -> None:
    """A checkpoint written before the trainer state grew its later keys (recorded identity, process count, the
    last validated step, recent losses, the budget plan, and whatever is added next) resumes exactly."""
    code, _, err = _finish(_start(tmp_path, "older", "kill"))
    assert code == -9, err[-2000:]
    step = tmp_path / "older" / "checkpoints" / (tmp_path / "older" / "checkpoints" / "latest").read_text().strip()
    state = json.loads((step / "trainer_state.json").read_text())
    assert set(state) - set(FIRST_STATE_KEYS)  # there is something to strip (else this test checks nothing)
    replace_trainer_state(step, {k: state[k] for k in FIRST_STATE_KEYS})
    code, out, err = _finish(_start(tmp_path, "older", "none", "--resume"))
    assert code == 0, err[-2000:]
    assert f"resumed from {step}" in out + err
    _assert_same_run(tmp_path / "older", straight)


def _wait_for_step(proc: subprocess.Popen, log: Path, step: int) -> None:
    """Block until the training log records `step` (the run is then mid-epoch 2)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        if log.is_file():
            steps = [json.loads(line).get("step", 0) for line in log.read_text().splitlines() if line.endswith("}")]
            if steps and max(steps) >= step:
                return
        time.sleep(0.01)
    raise AssertionError(f"step {step} never appeared in {log}")


@pytest.mark.parametrize(("signum", "exit_code", "name"), [(signal.SIGINT, 130, "Ctrl-C"),
                                                           (signal.SIGTERM, 143, "SIGTERM")],
                         ids=["SIGINT", "SIGTERM"])
def test_signal_mid_epoch_then_resume_equals_uninterrupted(
    tmp_path: Path, straight: Path, signum: int, exit_code: int, name: str
) -> None:
    """Ctrl-C and SIGTERM checkpoint at the next step boundary, before its forward pass draws dropout
    masks: the resumed run is the uninterrupted one, bit for bit."""
    proc = _start(tmp_path, "run", "slow")
    _wait_for_step(proc, tmp_path / "run" / "train_log.jsonl", 17)
    proc.send_signal(signum)
    code, _, err = _finish(proc)
    assert code == exit_code, err[-2000:]
    assert "Traceback" not in err
    last_line = err.strip().splitlines()[-1]
    assert last_line.startswith(f"error: interrupted ({name}) at step "), last_line
    assert "Resume with: nlpipe run recipe ner-bilstm" in last_line and last_line.endswith("--resume")
    ckpt = tmp_path / "run" / "checkpoints"
    state = json.loads((ckpt / (ckpt / "latest").read_text().strip() / "trainer_state.json").read_text())
    assert state["epoch"] == 1 and 0 < state["batches_done"] < 13  # mid-epoch 2
    assert last_line.startswith(f"error: interrupted ({name}) at step {state['global_step']};")
    code, out, err = _finish(_start(tmp_path, "run", "none", "--resume"))
    assert code == 0, err[-2000:]
    assert f"step {state['global_step']}, epoch 1" in out + err
    _assert_same_run(tmp_path / "run", straight)


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


@pytest.mark.parametrize("fault", ["nan-loss", "nan-gradient"])
def test_nan_loss_or_gradient_stops_with_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    from safetensors.torch import load_file

    from nlpipe.run import run_recipe
    from nlpipe.tasks.token_classification import TokenClassificationTask

    calls = {"n": 0}
    original = TokenClassificationTask.loss

    def loss(self, model, batch):  # noqa: ANN001
        calls["n"] += 1
        value = original(self, model, batch)
        if calls["n"] != 7:
            return value
        if fault == "nan-loss":
            return value * math.nan
        weight = next(model.parameters())  # a finite loss whose gradient is 0 * inf = nan
        return value + 0.0 * (weight - weight.detach()).abs().sqrt().sum()

    monkeypatch.setattr(TokenClassificationTask, "loss", loss)
    with pytest.raises(NlpipeError) as caught:
        run_recipe(_tiny(tmp_path), data="sample", output_dir=tmp_path / "run", progress=False)
    message = str(caught.value)
    expected = "loss became nan" if fault == "nan-loss" else "gradient norm became nan"
    assert f"training diverged: {expected} at step 7" in message, message
    assert "the last good checkpoint, step-00000004, is intact" in message
    assert "\n" not in message
    ckpt = tmp_path / "run" / "checkpoints"
    latest = ckpt / (ckpt / "latest").read_text().strip()
    assert latest.name == "step-00000004"
    weights = load_file(str(latest / "model.safetensors"))
    assert all(bool(t.isfinite().all()) for t in weights.values())
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_exploding_loss_before_any_checkpoint_leaves_nothing_that_blocks_the_rerun(tmp_path: Path) -> None:
    """learning_rate=1e9 keeps the loss finite but makes it explode: caught, and since no checkpoint
    exists the message says so and the rerun it suggests (same folder, no --overwrite) works."""
    args = [a for a in RECIPE_ARGS if not a.startswith("train.learning_rate")]
    code, _, err = _finish(_start(tmp_path, "run", "none", "train.learning_rate=1e9", recipe_args=args))
    assert code != 0 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: training diverged: loss exploded to") and "at step 2 " in last, last
    assert "no checkpoint was written" in last and "intact" not in last and last.endswith("then rerun")
    assert not (tmp_path / "run").exists()
    code, _, err = _finish(_start(tmp_path, "run", "none", "train.learning_rate=0.01", "train.max_steps=2",
                                  recipe_args=args))
    assert code == 0, err[-2000:]


def test_divergence_criterion() -> None:
    from nlpipe.training.loop import divergence

    assert divergence(math.nan, [2.0]) == "loss became nan"
    assert divergence(math.inf, []) == "loss became inf"
    assert divergence(5e9, [2.2, 2.1]) and "exploded" in divergence(5e9, [2.2, 2.1])
    assert divergence(30.0, [2.2, 2.1, 2.0]) is None  # a spike, not a divergence
    assert divergence(2.5, [0.001] * 50) is None  # late in training the loss is tiny; 2.5 is no explosion
    assert divergence(1e9, []) is None  # nothing to compare with yet (the next step will be)


def test_output_dir_problems_fail_before_training(tmp_path: Path) -> None:
    from nlpipe.run import _check_output_dir

    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "metrics.json").write_text("{}")
    (existing / "run_info.json").write_text('{"nlpipe_run_folder": 1}')  # recognisably an nlpipe run
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
def test_kill_during_final_evaluation_then_resume_stops_at_max_steps(tmp_path: Path) -> None:
    """The checkpoint of step max_steps is written before the final evaluation; a resume from it
    evaluates and finishes, it does not train a step more."""
    args = [*RECIPE_ARGS, "train.max_steps=12"]
    code, _, err = _finish(_start(tmp_path, "run", "evalkill", recipe_args=args, kill_at=12))
    assert code == -9, err[-2000:]
    ckpt = tmp_path / "run" / "checkpoints"
    assert (ckpt / "latest").read_text().strip() == "step-00000012"
    code, out, err = _finish(_start(tmp_path, "run", "none", "--resume", recipe_args=args))
    assert code == 0, err[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (metrics["train"]["steps"], metrics["train"]["stopped_because"]) == (12, "max_steps")
    log = _log(tmp_path / "run")
    assert max(r["step"] for r in log) == 12
    assert [r["step"] for r in log if r.get("split") == "validation"] == [12]  # evaluated once, at the end


def _tree_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def killed_at_8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run killed mid-epoch after its checkpoint of step 8: it holds step-00000004 and step-00000008."""
    tmp_path = tmp_path_factory.mktemp("killed8")
    code, _, err = _finish(_start(tmp_path, "run", "kill", kill_at=8))
    assert code == -9, err[-2000:]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step-*")) == [
        "step-00000004", "step-00000008"]
    return tmp_path / "run"


@pytest.mark.parametrize(("change", "expected"), [
    (["model.hidden_size=32"], "recipe differs (model.hidden_size: 16 -> 32)"),
    (["train.learning_rate=0.02"], "recipe differs (train.learning_rate: 0.01 -> 0.02)"),
    (["RECIPE=ner-bilstm-crf"], "recipe differs (name: \"ner-bilstm\" -> \"ner-bilstm-crf\""),
    (["DATA"], "data source differs (the run used --data sample, this is --data-dir "),
], ids=["model-size", "learning-rate", "other-recipe", "data-source"])
def test_resume_with_another_recipe_or_data_is_refused_before_writing(
    tmp_path: Path, killed_at_8: Path, change: list[str], expected: str
) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(killed_at_8, run)
    before = _tree_hashes(run)
    args = list(RECIPE_ARGS)
    if change == ["DATA"]:
        data_dir = tmp_path / "data"
        data_dir.mkdir()
        args[args.index("--data"):args.index("--data") + 2] = ["--data-dir", str(data_dir)]
    elif change[0].startswith("RECIPE="):
        args[args.index("ner-bilstm")] = change[0].split("=", 1)[1]
    else:
        args += change
    code, _, err = _finish(_start(tmp_path, "run", "none", "--resume", recipe_args=args))
    assert code != 0 and "Traceback" not in err, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: {run}: cannot resume: {expected}"), last
    assert "resume with the recipe, overrides and data the run started with" in last
    assert _tree_hashes(run) == before  # recipe.yaml byte-identical, checkpoints untouched


def _truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def test_damaged_latest_checkpoint_falls_back_and_resume_is_exact(
    tmp_path: Path, killed_at_8: Path, straight: Path
) -> None:
    """The newest checkpoint is truncated: the resume names it, falls back to step 4, cleans up what
    earlier kills left behind, and still reaches the uninterrupted run exactly."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(killed_at_8, run)
    _truncate(run / "checkpoints" / "step-00000008" / "model.safetensors")
    (run / "checkpoints" / ".step-00000012.x1y2").mkdir()  # left by a kill during a checkpoint write
    (run / "checkpoints" / ".step-00000012.x1y2" / "model.safetensors").write_bytes(b"partial")
    (run / "checkpoints" / ".latest.abc").write_text("step-000")
    code, out, err = _finish(_start(tmp_path, "run", "none", "--resume"))
    assert code == 0, err[-2000:]
    # Logs go to stderr (stdout is the result line).
    assert ("warning: " + str(run / "checkpoints" / "step-00000008") + ": model.safetensors is truncated") in err
    assert "falling back to step-00000004" in err and "resumed from" in err
    assert "step-00000012" not in out + err  # the half-written folder was cleaned up, never a candidate
    _assert_same_run(run, straight)


def test_no_intact_checkpoint_is_one_line(tmp_path: Path, killed_at_8: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(killed_at_8, run)
    for step in (run / "checkpoints").glob("step-*"):
        (step / "optimizer.pt").unlink()
    code, _, err = _finish(_start(tmp_path, "run", "none", "--resume"))
    assert code != 0 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: {run}: no checkpoint to resume from (none is intact: "), last
    assert "step-00000008: optimizer.pt is missing" in last and "step-00000004: optimizer.pt is missing" in last


SIGTERM_WHILE_LOADING = """
import os, signal, sys, time
import nlpipe.data.catalog as catalog

real_load = catalog.load_data

def load_then_get_killed(*args, **kwargs):  # SIGTERM arrives while the data loads, before any training step
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
    return real_load(*args, **kwargs)

catalog.load_data = load_then_get_killed
import nlpipe.run
nlpipe.run.load_data = load_then_get_killed
sys.argv = ["nlpipe", *sys.argv[1:]]
from nlpipe.cli import main
main()
"""


def test_sigterm_before_training_stops_cleanly_and_leaves_nothing(tmp_path: Path) -> None:
    """SIGTERM outside the training loop (here: while the data loads) is one line and exit 143, the run folder
    this command prepared is taken back, and the same command then runs."""
    run_dir = tmp_path / "runs" / "x"
    args = ["run", "recipe", "ner-bilstm", "--data", "sample", "--no-progress", "--output-dir", str(run_dir),
            "train.max_steps=2", "data.max_train_examples=32", "data.max_eval_examples=8"]
    proc = subprocess.run([sys.executable, "-c", SIGTERM_WHILE_LOADING, *args], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 143, proc.stderr[-2000:]
    assert "interrupted (SIGTERM)" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
    assert not run_dir.exists() and not any(p.name.startswith(".x.") for p in run_dir.parent.glob(".*"))
    again = subprocess.run([sys.executable, "-m", "nlpipe", *args], capture_output=True, text=True, timeout=600,
                           cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
