"""The bad-input catalogue (docs/errors.md): every row runs the real CLI entry point (`nlpipe.cli.main`,
in-process, with its own error handling) and must give exit code != 0, exactly one line on stderr
(``error: <where>: <what to do>``) naming the file/line/key, no traceback, and no run folder.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from nlpipe.cli import main

GOOD_RECIPE = """\
name: tiny
task: token-classification
data: {dataset: conll2003}
tokenizer: {spec: word-level}
model: {type: rnn_tagger, hidden_size: 8, embedding_dim: 8}
train: {max_epochs: 1}
"""
CONLL = "EU B-ORG\nrejects O\nGerman B-MISC\n\nPeter B-PER\nBlackburn I-PER\n"


def _recipe(text: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        (tmp / "r.yaml").write_text(text, encoding="utf-8")
        return ["run", "recipe", str(tmp / "r.yaml"), "--data", "sample", "--output-dir", str(tmp / "out")]

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


CATALOGUE = {
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
    "parallel-lengths-differ": (_parallel, ["train.de has 3 lines", "train.en has 2", "line-aligned"]),
    "non-utf8": (_conll({"train.txt": b"EU B-ORG\nM\xfcnchen B-LOC\n"}),
                 ["train.txt:2", "not valid UTF-8", "0xfc", "re-encode"]),
    "extremely-long-line": (_conll({"train.txt": "EU B-ORG\n" + "x" * 1_000_001 + " O\n"}),
                            ["train.txt:2", "line longer than 1000000 characters"]),
    "empty-predict-text": (lambda tmp: ["predict", str(tmp / "out"), ""], ["text argument, line 1", "empty text"]),
    "run-dir-missing-files": (_run_dir_missing, ["out", "'recipe.yaml' is missing", "rerun it or use --resume"]),
}


@pytest.mark.parametrize("row", list(CATALOGUE))
def test_bad_input_gives_one_clear_line(row: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    setup, fragments = CATALOGUE[row]
    argv = setup(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    monkeypatch.setattr(sys, "argv", ["nlpipe", *argv])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code not in (0, None)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err[-2000:]
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    # Nothing half-written: the files are exactly those the row set up (no run folder, no recipe copy).
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_catalogue_is_documented() -> None:
    table = (Path(__file__).resolve().parents[1] / "docs" / "errors.md").read_text(encoding="utf-8")
    for row in CATALOGUE:
        assert f"`{row}`" in table, f"docs/errors.md lacks the row {row}"
