"""Run folders (nlpipe/run_folder.py): identity, overwrite by staging + swap, locking, the recipe name.

Every case runs the real ``nlpipe`` command in a subprocess and checks: exit code != 0, exactly one
``error:`` line naming the file and the fix, no traceback, and that every file around it (a thesis, a
finished run) is byte-identical afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_export_without_nlpipe import make_run_folder

from nlpipe.run_folder import (
    RunFolderLock,
    check_replaceable,
    is_run_folder,
    lock_path,
    staging_path,
)

REPO = Path(__file__).resolve().parents[1]
TINY = ["model.embedding_dim=8", "model.hidden_size=8", "train.batch_size=4", "eval.batch_size=8"]


def nlpipe(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The real command in a fresh process (the same entry point as the console script)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "nlpipe", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def snapshot(root: Path) -> dict[str, str]:
    """Relative path → sha256 (or 'link -> target' / 'dir') of everything under `root`, hidden files included."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            found[rel] = f"link -> {os.readlink(path)}"
        elif path.is_dir():
            found[rel] = "dir"
        else:
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def assert_one_error_line(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Non-zero exit, no traceback, exactly one stderr line starting ``error:`` that holds every fragment."""
    assert result.returncode not in (0, None), result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], f"{fragment!r} not in {errors[0]!r}"
    return errors[0]


def bystanders(root: Path) -> None:
    """Files a careless tool could destroy: a thesis, a notes file beside the runs, a secret."""
    (root / "thesis").mkdir()
    (root / "thesis" / "thesis.tex").write_text("\\documentclass{article} % two years of work\n")
    (root / "notes.md").write_text("keep me\n")
    (root / "secret.txt").write_text("hunter2\n")


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """tmp/ with bystander files and a finished run folder at runs/old."""
    bystanders(tmp_path)
    make_run_folder("tagger", tmp_path / "runs" / "old")
    return tmp_path


def _run_args(output: str, *extra: str) -> list[str]:
    return ["run", "recipe", "ner-bilstm", "--data", "sample", "--output-dir", output, "--no-progress", *TINY, *extra]


def _plain_folder(tmp: Path) -> list[str]:
    return _run_args("thesis", "--overwrite")


def _run_with_user_file(tmp: Path) -> list[str]:
    (tmp / "runs" / "old" / "chapter1.tex").write_text("mine\n")
    return _run_args("runs/old", "--overwrite")


def _link_to_run(tmp: Path) -> list[str]:
    (tmp / "runs" / "link").symlink_to("old")
    return _run_args("runs/link", "--overwrite")


def _not_a_run_without_flag(tmp: Path) -> list[str]:
    return _run_args("thesis")


def _recipe_name(name: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        (tmp / "r.yaml").write_text(
            f"name: {json.dumps(name)}\ntask: token-classification\ndata: {{dataset: conll2003}}\n"
            "tokenizer: {spec: word-level}\nmodel: {type: rnn_tagger, hidden_size: 8, embedding_dim: 8}\n"
        )
        return ["run", "recipe", "r.yaml", "--data", "sample", "--overwrite"]

    return setup


def _name_override(tmp: Path) -> list[str]:
    return ["run", "recipe", "ner-bilstm", "--data", "sample", "--overwrite", "name=../../thesis"]


def _tokenizer_into(folder: str, foreign: str | None = None) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        if foreign:
            (tmp / folder).mkdir(parents=True, exist_ok=True)
            (tmp / folder / foreign).write_text("{}\n")
        return ["tokenizer", "train", "word-level", "--output-dir", folder]

    return setup


REFUSED = {
    # case: (setup → argv, fragments of the error line)
    "overwrite-plain-folder": (_plain_folder, ["thesis: not an nlpipe run folder", "thesis.tex", "--output-dir"]),
    "overwrite-run-holding-user-files": (_run_with_user_file,
                                         ["runs/old: holds files nlpipe did not write (chapter1.tex)", "move them"]),
    "overwrite-symlink": (_link_to_run, ["runs/link: is a symbolic link", "--output-dir"]),
    "output-dir-not-a-run": (_not_a_run_without_flag, ["thesis: folder already holds files that are not an nlpipe run",
                                                       "thesis.tex", "--output-dir"]),
    "recipe-name-dotdot": (_recipe_name("../../thesis"), ["r.yaml: key 'name'", "'../../thesis' is not a run name",
                                                          "--output-dir"]),
    "recipe-name-absolute": (_recipe_name("/tmp/x"), ["r.yaml: key 'name'", "'/tmp/x' is not a run name"]),
    "recipe-name-separator": (_recipe_name("runs/x"), ["key 'name'", "no '/'"]),
    "recipe-name-override": (_name_override, ["key 'name'", "'../../thesis' is not a run name"]),
    "tokenizer-into-run-folder": (_tokenizer_into("runs/old"), ["--output-dir runs/old: is the run folder",
                                                                "choose a folder outside it"]),
    "tokenizer-inside-run-folder": (_tokenizer_into("runs/old/tok"), ["--output-dir runs/old/tok: lies inside the run",
                                                                      "choose a folder outside it"]),
    "tokenizer-over-foreign-files": (_tokenizer_into("mytok", "tokenizer_config.json"),
                                     ["--output-dir mytok: already holds tokenizer_config.json", "nlpipe did not write",
                                      "empty folder"]),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_before_anything_is_touched(case: str, workspace: Path) -> None:
    setup, fragments = REFUSED[case]
    argv = setup(workspace)
    before = snapshot(workspace)
    result = nlpipe(*argv, cwd=workspace)
    assert_one_error_line(result, *fragments)
    assert snapshot(workspace) == before


def test_failed_overwrite_leaves_the_old_run_whole(workspace: Path) -> None:
    """A missing --data-dir used to empty the finished run, then fail."""
    before = snapshot(workspace)
    result = nlpipe("run", "recipe", "ner-bilstm", "--data-dir", str(workspace / "no-such-data"),
                    "--output-dir", "runs/old", "--overwrite", cwd=workspace)
    assert_one_error_line(result, "no-such-data", "the previous run in runs/old is untouched")
    assert snapshot(workspace) == before  # no staging folder, no lock file left either


def test_second_run_into_a_locked_folder_fails_at_once(workspace: Path) -> None:
    before = snapshot(workspace)
    with RunFolderLock(workspace / "runs" / "old"):
        started = time.perf_counter()
        result = nlpipe(*_run_args("runs/old", "--overwrite"), cwd=workspace)
        assert time.perf_counter() - started < 60
    assert_one_error_line(result, "runs/old: another nlpipe run is writing this folder",
                          f"process {os.getpid()} on host ")
    assert snapshot(workspace) == before


@pytest.mark.slow
def test_killed_overwrite_keeps_old_run_then_overwrite_replaces_it(workspace: Path) -> None:
    """kill -9 in the middle of an overwrite: the old run is intact; the next overwrite swaps cleanly."""
    run = workspace / "runs" / "old"
    before = snapshot(workspace)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-m", "nlpipe", *_run_args("runs/old", "--overwrite", "train.max_steps=100000",
                                                    "train.checkpoint_every_steps=2")],
        cwd=workspace, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.time() + 240
        while not (staging_path(run) / "checkpoints" / "latest").is_file():
            assert child.poll() is None, child.stderr.read()[-3000:] if child.stderr else ""
            assert time.time() < deadline, "no checkpoint appeared in the staging folder"
            time.sleep(0.2)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    after_kill = snapshot(workspace)
    assert {k: v for k, v in after_kill.items() if k in before} == before  # the old run and bystanders unchanged
    assert is_run_folder(staging_path(run))

    result = nlpipe(*_run_args("runs/old", "--overwrite", "train.max_steps=2"), cwd=workspace)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not staging_path(run).exists() and not lock_path(run).exists()
    assert json.loads((run / "metrics.json").read_text())["train"]["steps"] == 2
    assert json.loads((run / "run_info.json").read_text())["nlpipe_run_folder"] == 1
    check_replaceable(run)  # what nlpipe wrote is again replaceable by nlpipe
    now = snapshot(workspace)
    assert {k: now[k] for k in ("thesis/thesis.tex", "notes.md", "secret.txt")} == {
        k: before[k] for k in ("thesis/thesis.tex", "notes.md", "secret.txt")}
    assert sorted(p.name for p in (workspace / "runs").iterdir()) == ["old"]
