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
    assert len(errors) == 1 and len(lines) == 1, result.stderr[-3000:]
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


# ----------------------------------------------------------------------------------------------- reading

@pytest.fixture(scope="module")
def tagger_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run_folder("tagger", tmp_path_factory.mktemp("template") / "run")


def _edit_json(path: Path, change: Callable[[dict], None]) -> None:
    values = json.loads(path.read_text())
    change(values)
    path.write_text(json.dumps(values))


def _truncate(name: str, keep: float = 0.5) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        data = (run / name).read_bytes()
        (run / name).write_bytes(data[: int(len(data) * keep)])

    return damage


def _drop_label(run: Path) -> None:
    def change(config: dict) -> None:
        config["id2label"] = {str(i): label for i, label in enumerate(list(config["id2label"].values())[:-1])}
        config["label2id"] = {label: i for i, label in enumerate(config["id2label"].values())}

    _edit_json(run / "config.json", change)


def _non_iob_label(run: Path) -> None:
    _edit_json(run / "config.json", lambda c: c["id2label"].update({"1": "PERSON"}))


def _bigger_tokenizer(run: Path) -> None:
    """What `nlpipe tokenizer train --output-dir RUN` used to do: a tokenizer from other data, more tokens."""
    def change(tok: dict) -> None:
        vocab = tok["model"]["vocab"]
        for i in range(500):
            vocab[f"extra{i}"] = len(vocab)

    _edit_json(run / "tokenizer.json", change)


def _other_model_recipe(run: Path) -> None:
    text = (run / "recipe.yaml").read_text().replace("type: rnn_tagger", "type: bert")
    (run / "recipe.yaml").write_text(text)


def _drop_tensor(run: Path) -> None:
    from safetensors.torch import load_file, save_file

    weights = load_file(str(run / "model.safetensors"))
    del weights["encoder.bias_hh_l0"]
    save_file(weights, str(run / "model.safetensors"), metadata={"format": "pt"})


def _training_now(run: Path) -> None:
    (run / "model.safetensors").unlink()


def _broken_log(run: Path) -> None:
    (run / "train_log.jsonl").write_text('{"step": 2, "loss": 2.0}\n{"step": 4, "split": "valid\n{"step": 6}\n')


BROKEN = {
    # case: (damage, command (RUN = the run folder), fragments of the error line)
    "predict-truncated-weights": (_truncate("model.safetensors"), ["predict", "RUN", "x"],
                                  ["model.safetensors: truncated or damaged weights", "rerun the run"]),
    "predict-empty-weights": (_truncate("model.safetensors", 0), ["predict", "RUN", "x"],
                              ["model.safetensors: truncated or damaged weights"]),
    "eval-half-config": (_truncate("config.json"), ["eval", "RUN", "--data", "sample"],
                         ["config.json: line", "not valid JSON", "half-written", "rerun the run"]),
    "predict-half-tokenizer": (_truncate("tokenizer.json"), ["predict", "RUN", "x"],
                               ["tokenizer.json: line", "not valid JSON"]),
    "predict-half-run-info": (_truncate("run_info.json"), ["predict", "RUN", "x"], ["run_info.json: line"]),
    "predict-labels-do-not-match-head": (_drop_label, ["predict", "RUN", "x"],
                                         ["config.json: key 'id2label'", "6 labels", "7 outputs"]),
    "predict-label-not-iob": (_non_iob_label, ["predict", "RUN", "x"],
                              ["config.json: key 'id2label'", "'PERSON' is not an IOB2 tag"]),
    "predict-tokenizer-replaced": (_bigger_tokenizer, ["predict", "RUN", "x"],
                                   ["tokenizer.json:", "tokens, but the model in config.json has vocab_size",
                                    "was it replaced"]),
    "predict-weights-missing-a-tensor": (_drop_tensor, ["predict", "RUN", "x"],
                                         ["model.safetensors: does not fit", "tensor 'encoder.bias_hh_l0' is missing"]),
    "eval-config-reshaped": (lambda run: _edit_json(run / "config.json", lambda c: c.update(hidden_size=24)),
                             ["eval", "RUN", "--data", "sample"],
                             ["model.safetensors: does not fit", "has another shape than config.json"]),
    "predict-mixed-runs": (_other_model_recipe, ["predict", "RUN", "x"],
                           ["config.json: key 'model_type'", "mixes two runs"]),
    "attention-on-ner-rnn-run": (lambda run: None, ["attention", "RUN", "Peter works in Berlin", "--out", "a.png"],
                                 ["a token-classification run of rnn_tagger", "without attention",
                                  "give such a run folder"]),
    "export-truncated-weights": (_truncate("model.safetensors", 0.9), ["export", "RUN", "exported"],
                                 ["model.safetensors: truncated or damaged weights"]),
    "export-weights-missing-a-tensor": (_drop_tensor, ["export", "RUN", "exported"],
                                        ["model.safetensors: does not fit", "tensor 'encoder.bias_hh_l0' is missing"]),
    "push-half-config": (_truncate("config.json"), ["push", "RUN", "me/x"], ["config.json: line", "not valid JSON"]),
    "predict-while-training": (_training_now, ["predict", "RUN", "x"],
                               ["a run is still training into this folder", f"process {os.getpid()}"]),
    "compare-half-metrics": (_truncate("metrics.json"), ["compare", "RUN", "--out", "report"],
                             ["metrics.json: line", "not valid JSON"]),
    "compare-broken-log": (_broken_log, ["compare", "RUN", "--out", "report"],
                           ["train_log.jsonl: line 2: not valid JSON", "leave it out"]),
    "compare-report-into-run": (lambda run: None, ["compare", "RUN", "--out", "RUN/report"],
                                ["--out", "lies inside the run folder", "choose a folder outside it"]),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_run_folder_is_named(case: str, tagger_template: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    damage, argv, fragments = BROKEN[case]
    bystanders(tmp_path)
    run = tmp_path / "run"
    shutil.copytree(tagger_template, run)
    damage(run)
    before = snapshot(tmp_path)
    monkeypatch.setenv("HF_TOKEN", "hf_FAKEtokenForTestsOnly0123456789abcdef")
    args = [str(run) if a == "RUN" else a.replace("RUN/", f"{run}/") for a in argv]
    if case == "predict-while-training":
        with RunFolderLock(run):
            result = nlpipe(*args, cwd=tmp_path)
    else:
        result = nlpipe(*args, cwd=tmp_path)
    assert_one_error_line(result, *fragments)
    assert snapshot(tmp_path) == before


def test_compare_tolerates_malformed_values_and_a_half_written_last_log_line(tagger_template: Path,
                                                                             tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "myrun"
    shutil.copytree(tagger_template, run)
    _edit_json(run / "metrics.json", lambda m: m.update(parameters="many", train=[1, 2], test={"f1": "high"}))
    with open(run / "train_log.jsonl", "a") as handle:
        handle.write('[1, 2]\n{"step": "x", "split": "validation", "f1": 3}\n{"step": 9, "spl')  # killed mid-write
    before = snapshot(run)
    result = nlpipe("compare", str(run), "--out", "report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    table = (tmp_path / "report" / "report.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| myrun "))
    assert row.count("–") >= 3, row  # parameters, score, wall time shown as missing, not as garbage
    assert snapshot(run) == before


# ----------------------------------------------------------------------------------------------- staging, in process


def _fake_checkpoint(folder: Path) -> None:
    from fake_checkpoints import write_intact_checkpoint

    write_intact_checkpoint(folder / "checkpoints", 4)


def test_resume_continues_an_interrupted_overwrite_and_swaps_at_the_end(tmp_path: Path) -> None:
    from nlpipe.run_folder import prepare_run_folder

    target = make_run_folder("tagger", tmp_path / "runs" / "x")
    old_weights = (target / "model.safetensors").read_bytes()
    staging = staging_path(target)
    staging.mkdir()
    (staging / "recipe.yaml").write_text((target / "recipe.yaml").read_text())
    _fake_checkpoint(staging)
    # Neither flag: refused, naming both ways on.
    with pytest.raises(Exception, match="interrupted --overwrite .* pass --resume .* or --overwrite"):
        prepare_run_folder(target)
    # The loop's resume hint may name the staging folder itself: it means the same run folder.
    via_staging = prepare_run_folder(staging, resume=True)
    assert (via_staging.target, via_staging.work_dir) == (target, staging)
    via_staging.release()
    folder = prepare_run_folder(target, resume=True)
    assert folder.staged and folder.work_dir == staging and lock_path(target).is_file()
    assert folder.create() == staging and (staging / "checkpoints" / "latest").is_file()  # resume keeps them
    assert (target / "model.safetensors").read_bytes() == old_weights  # untouched until the end
    (staging / "model.safetensors").write_bytes(b"new")
    assert folder.finish() == target
    assert (target / "model.safetensors").read_bytes() == b"new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["x"]  # no staging, no old copy, no lock


def test_a_swap_killed_between_its_renames_is_undone(tmp_path: Path) -> None:
    from nlpipe.run_folder import prepare_run_folder

    target = tmp_path / "runs" / "x"
    replaced = target.parent / ".x.nlpipe-replaced"
    make_run_folder("tagger", replaced)  # the old run, renamed away; the new one never arrived
    folder = prepare_run_folder(target, overwrite=True)
    try:
        assert is_run_folder(target) and not replaced.exists()
        assert folder.staged  # the restored run is replaced only at the end of this one
    finally:
        folder.abandon()
    assert sorted(p.name for p in target.parent.iterdir()) == ["x"]


def test_failed_staged_run_without_checkpoint_leaves_nothing(tmp_path: Path) -> None:
    from nlpipe.run_folder import prepare_run_folder

    target = make_run_folder("tagger", tmp_path / "runs" / "x")
    before = snapshot(tmp_path)
    folder = prepare_run_folder(target, overwrite=True)
    folder.create()
    (folder.work_dir / "recipe.yaml").write_text("# nlpipe run recipe x\n")
    folder.abandon()
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("existing", [False, True])
def test_failure_before_the_first_checkpoint_leaves_nothing_that_blocks_the_rerun(
    existing: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that fails mid-training with nothing to resume (e.g. a NaN at step 3) leaves no half run folder:
    the rerun it suggests works as is; an overwrite's old run stays whole."""
    import nlpipe.training.loop
    from nlpipe.errors import NlpipeError
    from nlpipe.run import run_recipe

    if existing:
        make_run_folder("tagger", tmp_path / "runs" / "x")
    before = snapshot(tmp_path)

    def fails(task, model, encoded, raw, recipe, run_dir, *args, **kwargs):
        assert (run_dir / "recipe.yaml").is_file()  # the work folder was written ...
        raise NlpipeError("loss became nan at step 3 (injected)")

    monkeypatch.setattr(nlpipe.training.loop, "train", fails)
    with pytest.raises(NlpipeError, match="injected"):
        run_recipe("ner-bilstm", TINY, data="sample", output_dir=tmp_path / "runs" / "x", overwrite=existing,
                   progress=False)
    assert snapshot(tmp_path) == before  # ... and taken back: no run folder, staging folder or lock file


def test_overwrite_clears_an_abandoned_staging_folder_even_without_an_old_run(tmp_path: Path) -> None:
    from nlpipe.run_folder import prepare_run_folder

    target = tmp_path / "runs" / "x"
    staging = staging_path(target)
    staging.mkdir(parents=True)
    (staging / "recipe.yaml").write_text("# nlpipe run recipe x.yaml\n")
    _fake_checkpoint(staging)
    folder = prepare_run_folder(target, overwrite=True)
    assert folder.staged
    folder.create()
    assert not (staging / "checkpoints").exists()  # started over, as asked
    (staging / "recipe.yaml").write_text("# nlpipe run recipe x.yaml\n")
    folder.finish()
    assert is_run_folder(target) and sorted(p.name for p in target.parent.iterdir()) == ["x"]


def test_every_case_is_a_row_of_the_catalogue() -> None:
    table = (REPO / "docs" / "errors.md").read_text(encoding="utf-8")
    for case in (*REFUSED, *BROKEN):
        assert f"`{case}`" in table, f"docs/errors.md lacks the row {case}"
