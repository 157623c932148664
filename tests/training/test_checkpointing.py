"""Checkpoints: damage of every kind is recognised and named, `find_resumable` falls back to the newest
intact one, and a failed write (a full disk) leaves the previous checkpoint the one --resume uses."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch
from fake_checkpoints import replace_trainer_state

from nlpipe.errors import NlpipeError
from nlpipe.training.checkpointing import checkpoint_problem, find_resumable, save_checkpoint


def _save(root: Path, step: int) -> Path:
    torch.manual_seed(step)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    return save_checkpoint(root, model, optimizer, scheduler, {"global_step": step, "epoch": 0, "batches_done": step})


def _truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


DAMAGE = {
    "truncated-weights": (lambda s: _truncate(s / "model.safetensors"), "model.safetensors is truncated"),
    "weights-header-garbage": (lambda s: (s / "model.safetensors").write_bytes(b"\xff" * 188),
                               "model.safetensors is truncated (header of"),
    "missing-optimizer": (lambda s: (s / "optimizer.pt").unlink(), "optimizer.pt is missing"),
    "truncated-optimizer": (lambda s: _truncate(s / "optimizer.pt"), "optimizer.pt is truncated"),
    "truncated-rng": (lambda s: _truncate(s / "rng.pt"), "rng.pt is truncated"),
    "broken-trainer-state": (lambda s: (s / "trainer_state.json").write_text('{"global_step": 8, "ep'),
                             "trainer_state.json is not valid JSON"),
    "trainer-state-without-step": (lambda s: (s / "trainer_state.json").write_text("[]"),
                                   "trainer_state.json lacks the training position"),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_newest_checkpoint_is_named_and_skipped(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "checkpoints"
    _save(root, 4)
    newest = _save(root, 8)
    damage, expected = DAMAGE[kind]
    damage(newest)
    assert expected in (checkpoint_problem(newest) or ""), checkpoint_problem(newest)
    found, notes = find_resumable(root)
    assert found == root / "step-00000004"
    assert len(notes) == 1 and notes[0].startswith(f"{newest}: {expected}"), notes


@pytest.mark.parametrize("pointer", ["", "\x00\x01", "step-00000099"])
def test_empty_or_wrong_latest_pointer_falls_back_to_the_newest_intact(tmp_path: Path, pointer: str) -> None:
    root = tmp_path / "checkpoints"
    _save(root, 4)
    _save(root, 8)
    (root / "latest").write_text(pointer)
    found, notes = find_resumable(root)
    assert found == root / "step-00000008"
    assert len(notes) == 1 and notes[0].startswith(f"{root / 'latest'} "), notes


def test_only_two_checkpoints_are_kept(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    for step in (4, 8, 12):
        _save(root, step)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-00000008", "step-00000012"]
    assert checkpoint_problem(root / "step-00000012") is None


@pytest.mark.parametrize("fail_at", [1, 2])
def test_full_disk_during_a_checkpoint_write_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: int
) -> None:
    """ENOSPC while writing checkpoint 2 (step 4): one line, step 2 stays what --resume uses, no partial
    folder is left. On checkpoint 1 (step 2): nothing was resumable, so nothing is left behind."""
    import nlpipe.training.checkpointing as checkpointing
    from nlpipe.recipe import load_recipe
    from nlpipe.run import run_recipe

    calls = {"n": 0}
    original = checkpointing.torch.save

    def save(obj, file, *args, **kwargs):  # noqa: ANN001
        if str(file).endswith("optimizer.pt"):
            calls["n"] += 1
            if calls["n"] == fail_at:
                with open(file, "wb") as handle:
                    handle.write(b"PK\x03\x04 half")
                raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return original(obj, file, *args, **kwargs)

    monkeypatch.setattr(checkpointing.torch, "save", save)
    recipe = load_recipe("ner-bilstm", ["data.max_train_examples=100", "data.max_eval_examples=20",
                                        "model.hidden_size=8", "model.embedding_dim=8", "train.batch_size=16",
                                        "train.checkpoint_every_steps=2", "train.max_steps=5"])
    run = tmp_path / "run"
    with pytest.raises(NlpipeError) as caught:
        run_recipe(recipe, data="sample", output_dir=run, progress=False)
    message = str(caught.value)
    assert "\n" not in message
    step = 2 * fail_at
    assert message.startswith(f"{run / 'checkpoints'}: could not write the checkpoint at step {step} "
                              "(No space left on device); "), message
    if fail_at == 1:
        assert "no checkpoint was written yet; free space, then rerun" in message
        assert not run.exists()  # nothing to resume: the rerun is not blocked
        return
    assert "the previous checkpoint step-00000002 is intact and --resume uses it" in message
    root = run / "checkpoints"
    assert (root / "latest").read_text() == "step-00000002"
    assert not list(root.glob(".step-*")) and not (root / "step-00000004").exists()
    assert find_resumable(root) == (root / "step-00000002", [])
    assert json.loads((root / "step-00000002" / "trainer_state.json").read_text())["global_step"] == 2


def _identity(**changes: object) -> dict:
    from nlpipe.recipe import load_recipe

    recipe = load_recipe("ner-bilstm", [f"{k}={v}" for k, v in changes.items() if "." in k]).to_dict()
    return {"recipe": recipe, "data": {"source": "dir", "data_dir": "/data"},
            "data_sha256": str(changes.get("sha", "aaaa1111bbbb2222"))}


def _record_identity(run: Path, identity: dict) -> None:
    """A checkpoint of `run` that recorded `identity` (the manifest kept consistent, so it stays intact)."""
    step = _save(run / "checkpoints", 4)
    state = json.loads((step / "trainer_state.json").read_text())
    replace_trainer_state(step, {**state, "identity": identity})


def test_resume_identity_names_what_differs(tmp_path: Path) -> None:
    from nlpipe.training.checkpointing import check_resume_identity

    _record_identity(tmp_path / "run", _identity())
    check_resume_identity(tmp_path / "run", _identity())  # the same: fine
    described = _identity()
    described["recipe"]["description"] = "another text"
    check_resume_identity(tmp_path / "run", described)  # may change
    check_resume_identity(tmp_path / "run", {**_identity(), "data": {"source": "dir", "data_dir": "/moved"}})
    with pytest.raises(NlpipeError, match=r"cannot resume: the data differs from the data the run started with "
                                          r"\(content hash aaaa1111bbbb -> cccc"):
        check_resume_identity(tmp_path / "run", _identity(sha="cccc3333dddd4444"))
    with pytest.raises(NlpipeError, match=r"cannot resume: recipe differs \(train.batch_size: 32 -> 8; "
                                          r"train.seed: 42 -> 7\)"):
        check_resume_identity(tmp_path / "run", _identity(**{"train.batch_size": 8, "train.seed": 7}))


def test_resume_accepts_settings_added_since_the_run_started_at_their_defaults(tmp_path: Path) -> None:
    """A run started by an older nlpipe recorded a recipe without the settings added since: resuming it with
    today's nlpipe works while those settings keep their defaults (training is as before) and is refused,
    naming the setting, when one is set otherwise. A setting today's nlpipe no longer knows still differs."""
    from nlpipe.recipe import TrainSection
    from nlpipe.training.checkpointing import check_resume_identity

    older = _identity()
    for key in ("average_checkpoints_until", "average_checkpoints"):  # settings an older nlpipe did not have
        assert older["recipe"]["train"].pop(key) == getattr(TrainSection(), key)  # this recipe leaves the default
    _record_identity(tmp_path / "run", older)
    check_resume_identity(tmp_path / "run", _identity())
    with pytest.raises(NlpipeError, match=r"cannot resume: recipe differs \(train.average_checkpoints_until: "
                                          r'"last" -> "best"\)'):
        check_resume_identity(tmp_path / "run", _identity(**{"train.average_checkpoints_until": "best"}))

    removed = _identity()
    removed["recipe"]["train"]["retired_knob"] = 3
    _record_identity(tmp_path / "gone", removed)
    with pytest.raises(NlpipeError, match=r"cannot resume: recipe differs \(train.retired_knob: 3 -> null\)"):
        check_resume_identity(tmp_path / "gone", _identity())


FULL_DISK_CLI = """
import errno, sys
import nlpipe.training.checkpointing as checkpointing

original = checkpointing.torch.save
calls = {"n": 0}

def save(obj, file, *args, **kwargs):  # the disk fills up while the second checkpoint is written
    if str(file).endswith("optimizer.pt"):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
    return original(obj, file, *args, **kwargs)

checkpointing.torch.save = save
sys.argv = ["nlpipe", *sys.argv[1:]]
from nlpipe.cli import main
main()
"""


def test_full_disk_through_the_cli_is_one_line_and_resume_uses_the_previous_checkpoint(tmp_path: Path) -> None:
    """The same fault through the real command: exit != 0, one `error:` line, no traceback, files outside the run
    folder unchanged; then `--resume` (disk space back) continues from step 2 and finishes."""
    import hashlib
    import subprocess
    import sys

    bystander = tmp_path / "notes.txt"
    bystander.write_text("mine")
    before = hashlib.sha256(bystander.read_bytes()).hexdigest()
    run = tmp_path / "run"
    args = ["run", "recipe", "ner-bilstm", "--data", "sample", "--no-progress", "--output-dir", str(run),
            "data.max_train_examples=100", "data.max_eval_examples=20", "model.hidden_size=8",
            "model.embedding_dim=8", "train.batch_size=16", "train.checkpoint_every_steps=2", "train.max_steps=5"]
    failed = subprocess.run([sys.executable, "-c", FULL_DISK_CLI, *args], capture_output=True, text=True,
                            timeout=600, cwd=tmp_path)
    assert failed.returncode != 0 and "Traceback" not in failed.stdout + failed.stderr
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "could not write the checkpoint at step 4 (No space left on device)" in errors[0]
    assert "step-00000002 is intact and --resume uses it" in errors[0]
    assert hashlib.sha256(bystander.read_bytes()).hexdigest() == before
    resumed = subprocess.run([sys.executable, "-m", "nlpipe", *args, "--resume"], capture_output=True, text=True,
                             timeout=600, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((run / "metrics.json").read_text())["train"]["steps"] == 5
