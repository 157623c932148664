"""The bad-input catalogue (docs/errors.md), run through the real ``nlpipe`` command in a subprocess.

Every row must give: a non-zero exit, exactly one ``error: <where>: <what to do>`` line on stderr
containing the row's fragments (the file/key/line and the fix), no ``Traceback`` anywhere in the
output, and no change to any file outside the run folder (every file under the test's tmp dir is
hashed before and after). By default the run folder must be unchanged too (absent stays absent).

To add a row: write a setup function ``tmp -> argv`` (the helpers `_recipe`, `_conll`, `_parallel`
make the usual inputs) and add ``"row-id": Case(setup, [fragments])`` to `CATALOGUE` (a plain
``(setup, [fragments])`` tuple works too), then a row with the same id to docs/errors.md.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

GOOD_RECIPE = """\
name: tiny
task: token-classification
data: {dataset: conll2003}
tokenizer: {spec: word-level}
model: {type: rnn_tagger, hidden_size: 8, embedding_dim: 8}
train: {max_epochs: 1}
"""


@dataclass
class Case:
    """One catalogue row."""

    setup: Callable[[Path], list[str]]
    """Creates the row's files under the tmp dir and returns the nlpipe arguments."""
    fragments: list[str]
    """Texts the one ``error:`` line must contain (where, what, the fix)."""
    run_dir: str = "out"
    """The run folder the command may write to, relative to the tmp dir (its contents are not hashed)."""
    run_folder: str = "unchanged"
    """``unchanged``: the run folder must be exactly as before (absent stays absent); ``any``: not checked."""


CONLL = "EU B-ORG\nrejects O\nGerman B-MISC\n\nPeter B-PER\nBlackburn I-PER\n"


def _recipe(text: str, *overrides: str, options: tuple[str, ...] = ()) -> Callable[[Path], list[str]]:
    """Train recipe ``text`` (written to r.yaml) with ``key=value`` overrides on the sample data into out/."""

    def setup(tmp: Path) -> list[str]:
        (tmp / "r.yaml").write_text(text, encoding="utf-8")
        return ["run", "recipe", str(tmp / "r.yaml"), *overrides, "--data", "sample", "--output-dir",
                str(tmp / "out"), *options]

    return setup


def _conll(files: dict[str, bytes | str]) -> Callable[[Path], list[str]]:
    """A --data-dir with conll2003/{train,valid,test}.txt; `files` replaces some of them (None: absent)."""

    def setup(tmp: Path) -> list[str]:
        folder = tmp / "data" / "conll2003"
        folder.mkdir(parents=True)
        contents = {"train.txt": CONLL, "valid.txt": CONLL, "test.txt": CONLL, **files}
        for name, content in contents.items():
            if content is not None:
                data = content if isinstance(content, bytes) else content.encode()
                (folder / name).write_bytes(data)
        return ["run", "recipe", "ner-bilstm", "--data-dir", str(tmp / "data"), "--output-dir", str(tmp / "out")]

    return setup


def _parallel(tmp: Path) -> list[str]:
    folder = tmp / "data" / "multi30k"
    folder.mkdir(parents=True)
    for stem in ("train", "val", "test_2016_flickr"):
        (folder / f"{stem}.de").write_text("ein Hund\neine Katze\nzwei Hunde\n")
        (folder / f"{stem}.en").write_text("a dog\na cat\n" + ("two dogs\n" if stem != "train" else ""))
    return ["run", "recipe", "translation-gru", "--data-dir", str(tmp / "data"), "--output-dir", str(tmp / "out")]


def _run_dir_missing(tmp: Path) -> list[str]:
    run = tmp / "out"
    run.mkdir()
    (run / "config.json").write_text("{}")
    return ["predict", str(run), "EU rejects German call"]


CATALOGUE: dict[str, Case | tuple] = {
    # row id: (setup → argv, fragments the one stderr line must contain)
    "malformed-yaml": (_recipe(GOOD_RECIPE + "train: {max_epochs: [1\n"), ["r.yaml:", "malformed YAML", "fix the syntax"]),
    "unknown-recipe-key": (_recipe(GOOD_RECIPE + "trian: {}\n"), ["r.yaml", "unknown key 'trian'", "valid keys"]),
    "bad-sample-setting": (_recipe(GOOD_RECIPE + "sample: {train.max_step: 3}\n"),
                           ["r.yaml", "unknown key 'train.max_step'", "fix the 'sample' section"]),
    "wrong-type": (_recipe(GOOD_RECIPE.replace("max_epochs: 1", "max_epochs: many")),
                   ["r.yaml", "key 'train.max_epochs'", "expected int"]),
    "missing-required-field": (_recipe(GOOD_RECIPE.replace("task: token-classification\n", "")),
                               ["r.yaml", "missing required key 'task'"]),
    "unknown-model": (_recipe(GOOD_RECIPE.replace("type: rnn_tagger, ", "type: lstmm, ")),
                      ["r.yaml", "key 'model.type'", "unknown model 'lstmm'", "known: rnn_tagger"]),
    "unknown-tokenizer-spec": (_recipe(GOOD_RECIPE.replace("spec: word-level", "spec: wordlevel")),
                               ["r.yaml", "key 'tokenizer.spec'", "unknown tokenizer spec 'wordlevel'", "known:"]),
    "missing-data-file": (_conll({"valid.txt": None}), ["conll2003/valid.txt", "data file not found", "--data-dir"]),
    "conll-wrong-columns": (_conll({"train.txt": "EU B-ORG\nrejects NN O\n"}),
                            ["train.txt:2", "expected 2 columns", "found 3"]),
    "label-outside-label-set": (_conll({"valid.txt": "EU B-FOO\n"}),
                                ["split 'validation', sentence 1", "label 'B-FOO'", "fix the data"]),
    "empty-split": (_conll({"test.txt": ""}), ["test.txt", "no sentences"]),
    "conll-lowercase-tag": (_conll({"train.txt": CONLL + "\nAl b-per\n"}),
                            ["train.txt:8", "tag 'b-per' is not an IOB tag", "upper-case (B-per)"]),
    "conll-tag-unknown-prefix": (_conll({"valid.txt": "EU X-ORG\n"}),
                                 ["valid.txt:1", "tag 'X-ORG' is not an IOB tag", "O, B-TYPE or I-TYPE"]),
    "conll-bioes-tag": (_conll({"test.txt": "Peter S-PER\n"}), ["test.txt:1", "'S-PER'", "convert the file to IOB2"]),
    "parallel-lengths-differ": (_parallel, ["train.de has 3 lines", "train.en has 2", "line-aligned"]),
    "non-utf8": (_conll({"train.txt": b"EU B-ORG\nM\xfcnchen B-LOC\n"}),
                 ["train.txt:2", "not valid UTF-8", "0xfc", "re-encode"]),
    "extremely-long-line": (_conll({"train.txt": "EU B-ORG\n" + "x" * 1_000_001 + " O\n"}),
                            ["train.txt:2", "line longer than 1000000 characters"]),
    "empty-predict-text": (lambda tmp: ["predict", str(tmp / "out"), ""], ["text argument, line 1", "empty text"]),
    "run-dir-missing-files": (_run_dir_missing, ["out", "'recipe.yaml' is missing", "rerun it or use --resume"]),
    # Values out of range (recipe.FIELD_LIMITS, model_registry.model_limit, recipe.GENERATE_LIMITS).
    "negative-batch-size": (_recipe(GOOD_RECIPE, "train.batch_size=-1"),
                            ["r.yaml", "key 'train.batch_size'", "-1 is out of range", "[1, 2147483647]"]),
    "zero-max-steps": (_recipe(GOOD_RECIPE.replace("max_epochs: 1", "max_epochs: 1, max_steps: 0")),
                       ["r.yaml", "key 'train.max_steps'", "0 is out of range", "[1, "]),
    "nan-learning-rate": (_recipe(GOOD_RECIPE, "train.learning_rate=.nan"),
                          ["r.yaml", "key 'train.learning_rate'", "nan is out of range", "> 0 (finite)"]),
    "negative-learning-rate": (_recipe(GOOD_RECIPE, "train.learning_rate=-0.1"),
                               ["r.yaml", "key 'train.learning_rate'", "-0.1", "> 0"]),
    "seed-out-of-range": (_recipe(GOOD_RECIPE, "train.seed=-1"),
                          ["r.yaml", "key 'train.seed'", "-1 is out of range", "[0, 4294967295]"]),
    "zero-max-length": (_recipe(GOOD_RECIPE, "data.max_length=0"), ["r.yaml", "key 'data.max_length'", "[1, "]),
    "zero-hidden-size": (_recipe(GOOD_RECIPE, "model.hidden_size=0"),
                         ["r.yaml", "key 'model.hidden_size'", "0 is out of range", "[1, "]),
    "dropout-out-of-range": (_recipe(GOOD_RECIPE, "model.dropout=1.0"),
                             ["r.yaml", "key 'model.dropout'", "1.0 is out of range", "[0, 1)"]),
    "zero-tokenizer-vocab-size": (_recipe(GOOD_RECIPE, "tokenizer.vocab_size=0"),
                                  ["r.yaml", "key 'tokenizer.vocab_size'", "0 is out of range"]),
    "model-setting-wrong-type": (_recipe(GOOD_RECIPE.replace("hidden_size: 8", "hidden_size: [8]")),
                                 ["r.yaml", "key 'model.hidden_size'", "expected int, got [8] (list)"]),
    "dataset-of-another-task": (_recipe(GOOD_RECIPE, "data.dataset=ptb"),
                                ["r.yaml", "key 'data.dataset'", "'ptb' holds lm data", "choose a data set of kind ner"]),
    "zero-eval-batch-size": (_recipe(GOOD_RECIPE, "eval.batch_size=0"), ["r.yaml", "key 'eval.batch_size'"]),
    "zero-num-beams": (_recipe(GOOD_RECIPE, "generate.num_beams=0"), ["r.yaml", "key 'generate.num_beams'"]),
    # YAML (recipe.RecipeLoader / load_yaml_text).
    "duplicate-top-level-key": (_recipe(GOOD_RECIPE + "train: {batch_size: 4}\n"),
                                ["r.yaml:7", "duplicate key 'train'", "first at line 6", "give each key once"]),
    "duplicate-nested-key": (_recipe(GOOD_RECIPE.replace("train: {max_epochs: 1}", "train:\n  max_epochs: 1\n"
                                                         "  batch_size: 2\n  max_epochs: 3")),
                             ["r.yaml:9", "duplicate key 'max_epochs'", "first at line 7"]),
    "duplicate-key-in-override": (_recipe(GOOD_RECIPE, "generate={num_beams: 1, num_beams: 2}"),
                                  ["override 'generate={num_beams: 1, num_beams: 2}'", "duplicate key 'num_beams'"]),
    "yaml-alias-bomb": (_recipe(GOOD_RECIPE + "".join(
        f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}" if i else '"lol"'] * 9) + "]\n" for i in range(9))
        + "description: *x8\n"), ["r.yaml", "aliases expand to more than 100,000 values", "anchors (&name)"]),
    "yaml-self-referencing-alias": (_recipe(GOOD_RECIPE, "generate.x=&a [*a]"),
                                    ["override 'generate.x=&a [*a]'", "refers to a value that contains it"]),
    "yaml-nested-too-deeply": (_recipe(GOOD_RECIPE + "description: " + "[" * 3000 + "]" * 3000 + "\n"),
                               ["r.yaml", "nested too deeply"]),
    "long-value-quoted-briefly": (_recipe(GOOD_RECIPE.replace("max_epochs: 1", "max_epochs: " + "9z" * 50_000)),
                                  ["r.yaml", "key 'train.max_epochs'", "expected int", "(100,000 characters)"]),
    "zero-num-processes": (_recipe(GOOD_RECIPE, options=("--num-processes", "0")),
                           ["--num-processes 0", "use a value >= 1"]),
}


def _snapshot(root: Path, skip: Path | None = None) -> dict[str, str]:
    """Relative path → sha256 (file), link target (symlink) or "dir", for everything under ``root``."""
    state: dict[str, str] = {}
    if not root.exists():
        return state
    for folder, dirs, files in os.walk(root):  # os.walk does not follow symlinked folders
        here = Path(folder)
        if skip is not None and (here == skip or skip in here.parents):
            dirs[:] = []
            continue
        for name in dirs + files:
            path = here / name
            if skip is not None and path == skip:
                continue
            rel = str(path.relative_to(root))
            if path.is_symlink():
                state[rel] = "link:" + os.readlink(path)
            elif path.is_dir():
                state[rel] = "dir"
            else:
                state[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def _diff(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(
        [f"removed {p}" for p in before.keys() - after.keys()]
        + [f"added {p}" for p in after.keys() - before.keys()]
        + [f"changed {p}" for p in before.keys() & after.keys() if before[p] != after[p]]
    )


def run_cli(argv: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``python -m nlpipe ARGV`` in ``cwd`` (offline, one thread, the test session's nlpipe cache)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"}
    env.pop("NLPIPE_DATA_DIR", None)
    return subprocess.run([sys.executable, "-m", "nlpipe", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _case(row: str) -> Case:
    entry = CATALOGUE[row]
    return entry if isinstance(entry, Case) else Case(*entry)


@pytest.mark.parametrize("row", list(CATALOGUE))
def test_bad_input_gives_one_clear_line(row: str, tmp_path: Path) -> None:
    case = _case(row)
    argv = case.setup(tmp_path)
    run_dir = tmp_path / case.run_dir
    outside_before = _snapshot(tmp_path, skip=run_dir)
    run_before = _snapshot(run_dir) if run_dir.exists() else None
    done = run_cli(argv, tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode != 0, f"exit 0 for {argv}: {output[-2000:]}"
    assert "Traceback" not in output, output[-4000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, f"expected one error: line, got {errors!r} in {done.stderr[-3000:]!r}"
    line = errors[0]
    assert len(line) < 1500, f"error line of {len(line)} characters"
    for fragment in case.fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    assert not _diff(outside_before, _snapshot(tmp_path, skip=run_dir)), "files outside the run folder changed"
    if case.run_folder == "unchanged":
        after = _snapshot(run_dir) if run_dir.exists() else None
        assert after == run_before, f"run folder changed: {_diff(run_before or {}, after or {})}"


def test_catalogue_is_documented() -> None:
    table = (Path(__file__).resolve().parents[1] / "docs" / "errors.md").read_text(encoding="utf-8")
    for row in CATALOGUE:
        assert f"`{row}`" in table, f"docs/errors.md lacks the row {row}"


def test_snapshot_sees_every_change_outside_the_run_folder(tmp_path: Path) -> None:
    """The harness itself can fail: an added, removed, changed or re-linked file outside the run folder shows."""
    (tmp_path / "thesis.tex").write_text("chapter 1")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("a")
    (tmp_path / "link").symlink_to(tmp_path / "thesis.tex")
    (tmp_path / "out").mkdir()
    before = _snapshot(tmp_path, skip=tmp_path / "out")
    (tmp_path / "out" / "model.safetensors").write_text("inside the run folder: not counted")
    assert _diff(before, _snapshot(tmp_path, skip=tmp_path / "out")) == []
    (tmp_path / "thesis.tex").write_text("chapter 2")
    (tmp_path / "notes" / "a.txt").unlink()
    (tmp_path / "notes" / "b.txt").write_text("b")
    (tmp_path / "link").unlink()
    (tmp_path / "link").symlink_to(tmp_path / "notes")
    assert _diff(before, _snapshot(tmp_path, skip=tmp_path / "out")) == [
        "added notes/b.txt", "changed link", "changed thesis.tex", "removed notes/a.txt"]
