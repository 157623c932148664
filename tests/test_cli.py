"""The CLI end to end on sample data, as a user runs it: train → eval → predict, and clean errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
QUICK = ["train.max_epochs=3", "model.hidden_size=32", "model.embedding_dim=32", "train.learning_rate=0.01"]


def nlpipe(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "nlpipe", *args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    work = tmp_path_factory.mktemp("cli")
    result = nlpipe("run", "recipe", "ner-bilstm", "--data", "sample", "--no-progress", *QUICK, cwd=work)
    return work / "runs" / "ner-bilstm", result


def test_run_writes_a_complete_run_folder(trained_run: tuple[Path, subprocess.CompletedProcess]) -> None:
    run_dir, result = trained_run
    for name in ("config.json", "model.safetensors", "tokenizer.json", "recipe.yaml", "metrics.json",
                 "run_info.json", "train_log.jsonl", "README.md", "training_curve.png"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "checkpoints").exists()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["f1"] > 30, metrics["test"]  # the sample data is learnable in 3 short epochs
    assert f"test f1 = {metrics['test']['f1']:.2f}" in result.stdout
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model_type"] == "nlpipe_rnn_tagger" and "B-PER" in config["id2label"].values()
    card = (run_dir / "README.md").read_text()
    assert card.startswith("---\n") and f"{metrics['test']['f1']:.2f}" in card


def test_eval_reproduces_the_test_score(trained_run: tuple[Path, subprocess.CompletedProcess]) -> None:
    run_dir, _ = trained_run
    result = nlpipe("eval", str(run_dir), "--split", "test", cwd=run_dir.parent)
    scores = json.loads(result.stdout)
    recorded = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert scores["f1"] == pytest.approx(recorded["f1"], abs=1e-9)


def test_predict_formats(trained_run: tuple[Path, subprocess.CompletedProcess], tmp_path: Path) -> None:
    run_dir, _ = trained_run
    text = "Maria Johnson visited Berlin on Monday ."
    as_json = json.loads(nlpipe("predict", str(run_dir), text, "--format", "json", cwd=tmp_path).stdout)
    assert as_json["text"] == text
    for entity in as_json["entities"]:
        assert text[entity["start"] : entity["end"]] == entity["word"]
    conll = nlpipe("predict", str(run_dir), text, "--format", "conll", cwd=tmp_path).stdout.split("\n")
    assert [line.split("\t")[0] for line in conll if line] == text.split()
    batch = tmp_path / "in.txt"
    batch.write_text(f"{text}\nAnna Schmidt works for Siemens .\n")
    lines = nlpipe("predict", str(run_dir), "--file", str(batch), cwd=tmp_path).stdout
    assert lines.count("→") == 2


def test_recipes_commands(tmp_path: Path) -> None:
    listed = nlpipe("recipes", "list", cwd=tmp_path).stdout
    assert "ner-bilstm" in listed and "token-classification" in listed
    shown = nlpipe("recipes", "show", "ner-bilstm", cwd=tmp_path).stdout
    assert shown.startswith("# nlpipe run recipe ner-bilstm")
    assert "ok:" in nlpipe("recipes", "validate", "ner-bilstm", cwd=tmp_path).stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "recipe", "no-such-recipe"], "unknown recipe 'no-such-recipe'"),
        (["run", "recipe", "ner-bilstm", "--data", "sample", "train.max_epoch=1"], "unknown key 'train.max_epoch'"),
        (["predict", "does-not-exist", "hello"], "does-not-exist: no such run folder"),
        (["eval", "does-not-exist"], "does-not-exist: no such run folder"),
    ],
)
def test_errors_are_one_line_without_traceback(args: list[str], expected: str, tmp_path: Path) -> None:
    result = nlpipe(*args, cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and expected in lines[-1], result.stderr


def test_root_cli_shim_calls_the_package_cli() -> None:
    result = subprocess.run([sys.executable, "cli.py", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "run" in result.stdout and "recipes" in result.stdout


def test_usage_error_is_click_style_without_traceback(tmp_path: Path) -> None:
    result = nlpipe("run", "recipe", "ner-bilstm", "--bogus", cwd=tmp_path, check=False)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) <= 4 and lines[0].startswith("Usage: nlpipe run recipe"), result.stderr
    assert lines[-1] == "Error: No such option: --bogus", result.stderr


def _command_paths() -> list[list[str]]:
    """Every command and group of the CLI, as argument lists (walked from the typer app itself)."""
    import typer.main

    from nlpipe.cli import app

    paths: list[list[str]] = []

    def walk(command, path: list[str]) -> None:
        paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return paths


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "nlpipe")
def test_help_shows_flags_without_a_value_placeholder(path: list[str], tmp_path: Path) -> None:
    result = nlpipe(*path, "--help", cwd=tmp_path)
    assert "--help" in result.stdout
    assert "<bool>" not in result.stdout, result.stdout


@pytest.mark.parametrize("args", [["recipes", "list"], ["recipes", "show", "ner-bilstm"],
                                  ["recipes", "validate", "ner-bilstm"], ["cache-dir"], ["--help"], ["runs", "."]])
def test_light_commands_import_neither_torch_nor_transformers(args: list[str], tmp_path: Path) -> None:
    """The commands a user runs first answer at once: they never load torch/transformers (~5 s of CPU)."""
    code = ("import sys\nfrom nlpipe.cli import main\nsys.argv = ['nlpipe', *sys.argv[1:]]\ntry:\n    main()\n"
            "finally:\n    print('heavy:', sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules),"
            " file=sys.stderr)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "heavy: []", result.stderr


TINY_TRANSLATION = ["train.max_steps=4", "train.eval_every_steps=2", "model.hidden_size=32", "model.embedding_dim=32",
                    "data.max_train_examples=64", "data.max_eval_examples=16", "generate.num_beams=1",
                    "generate.max_new_tokens=10", "tokenizer.vocab_size=300"]


def test_stdout_is_data_and_logs_go_to_stderr(tmp_path: Path) -> None:
    """run/eval/predict on a tiny translation run: stdout holds only results (eval: pure JSON), the
    sacreBLEU signature is logged once per run on stderr, never at each validation."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "NLPIPE_CACHE": str(tmp_path / "cache")}  # tokenizer trained here

    def cli(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "nlpipe", *args], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    run = cli("run", "recipe", "translation-gru", "--data", "sample", "--no-progress", *TINY_TRANSLATION)
    assert run.stdout.splitlines() == [next(x for x in run.stdout.splitlines() if x.startswith("done: "))], run.stdout
    assert run.stderr.count("sacrebleu_signature") == 1, run.stderr  # two validations + two final splits: once
    assert "validation sacrebleu" in run.stderr  # the per-step log is there, on stderr
    run_dir = tmp_path / "runs" / "translation-gru"
    scores = json.loads(cli("eval", str(run_dir), "--split", "test").stdout)
    assert scores["sacrebleu_signature"].startswith("nrefs:1") and "sacrebleu" in scores
    lines = cli("predict", str(run_dir), "Ein Hund läuft .", "--format", "json").stdout.splitlines()
    assert [json.loads(line)["text"] for line in lines] == ["Ein Hund läuft ."]


def test_no_progress_silences_every_bar(trained_run: tuple[Path, subprocess.CompletedProcess]) -> None:
    """Bars: encoding (datasets' map), evaluation over a split; --no-progress turns all of them off."""
    run_dir, result = trained_run  # trained with --no-progress
    assert "%|" not in result.stderr and "it/s]" not in result.stderr, result.stderr
    shown = nlpipe("eval", str(run_dir), cwd=run_dir.parent).stderr
    assert "encode test" in shown and "evaluating 200 examples" in shown, shown  # the reference: bars exist
    silent = nlpipe("eval", str(run_dir), "--no-progress", cwd=run_dir.parent).stderr
    assert "%|" not in silent and "it/s]" not in silent and "examples/s]" not in silent, silent
