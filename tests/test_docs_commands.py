"""Every `nlpipe ...` command in the code blocks of README.md and docs/*.md runs, as a reader would run it.

The commands of one document run in order in one scratch folder through the CLI entry point
(`nlpipe.cli.main`, in-process for speed), so `runs/ner-bilstm` written by one line is there for
`nlpipe eval runs/ner-bilstm` on the next. What the test changes, and why:

- data: `--data-dir DIR` becomes `--data sample`, and a `run recipe` without a data option gets `--data sample`
  (a reader's data folder and the Hub are not here);
- size: runs are capped (a few steps, a tiny model, few evaluation examples; a `compare --recipes` leaderboard
  gets the same caps and one seed) — `tests/recipes/` and
  `benchmarks/sample_runs.py` cover the real sample runs;
- `[optional]` parts of a synopsis are left out; `nlpipe experiment` gets `--quick`; `nlpipe serve` (a server
  that runs until stopped) only gets its run folder made — `tests/serving/` runs the real server;
- the Hub: `push` and `push_to_hub=true` go to the local Hub stand-in of `tests/test_hub.py` (no network);
- preconditions a reader has made earlier: a run folder `runs/NAME` that no earlier line wrote is first
  made by a capped sample run of recipe NAME; `--resume` gets a run interrupted with Ctrl-C to resume; a
  `run recipe` onto a folder an earlier line filled gets `--overwrite` (README lines are alternatives).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tiny_models import TINY_MODEL

from nlpipe.cli import main
from nlpipe.recipe import list_recipes, load_recipe

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_BLOCK = re.compile(r"^```(?:bash|sh|shell|console)?[ \t]*\n(.*?)^```", re.S | re.M)

CAPS = ["train.max_steps=3", "data.max_train_examples=64", "data.max_eval_examples=16", "train.batch_size=16",
        "eval.batch_size=16", "train.eval_every_steps=null", "train.max_train_minutes=null"]


def doc_commands(path: Path) -> list[list[list[str]]]:
    """The `nlpipe` command lines of a document's shell code blocks, each as pipeline stages of argv lists.

    A stage is split at `|`, `&&` and `;`; `> FILE` stays in the argv as two items for the runner to handle.
    """
    lines = []
    for block in SHELL_BLOCK.findall(path.read_text(encoding="utf-8")):
        for line in block.replace("\\\n", " ").splitlines():  # a line continued with a backslash is one line
            line = line.strip().removeprefix("$ ")
            if line.startswith("nlpipe "):
                lines.append(line)
    commands = []
    for line in lines:
        lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;>")
        lexer.whitespace_split = True
        tokens, stages, optional = list(lexer), [[]], 0
        for token in tokens:
            if token.startswith("["):  # a synopsis' [optional] part
                optional += 1
            if optional:
                optional -= token.count("]") if token.endswith("]") else 0
                continue
            if token in ("|", "&&", ";"):
                stages.append([])
            else:
                stages[-1].append(token)
        commands.append([s for s in stages if s])
    return commands


def _option(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _drop_option(argv: list[str], name: str) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out


def _caps(recipe_name: str) -> list[str]:
    recipe = load_recipe(recipe_name, sample=True)
    caps = CAPS + TINY_MODEL.get(recipe.model["type"], [])
    if recipe.generate:
        caps += ["generate.num_beams=1", "generate.max_new_tokens=8"]
    return caps


class Reader:
    """Runs a document's commands in `root` like a reader on a fresh clone would (see the module docstring)."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
        self.root, self.monkeypatch, self.capsys = root, monkeypatch, capsys

    def cli(self, argv: list[str], stdin: str | None = None) -> tuple[int, str, str]:
        import io

        self.capsys.readouterr()
        self.monkeypatch.setattr(sys, "argv", ["nlpipe", *argv])
        self.monkeypatch.setattr(sys, "stdin", io.StringIO(stdin or ""))
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = self.capsys.readouterr()
        return code, out, err

    def ensure_run(self, run_dir: str) -> None:
        """A command reads `runs/NAME` that no earlier line made: make it as `nlpipe run recipe NAME` would."""
        path = self.root / run_dir
        name = Path(run_dir).name
        if path.exists() or name not in list_recipes():
            return
        code, _, err = self.cli(["run", "recipe", name, "--data", "sample", "--no-progress", "--output-dir", run_dir,
                                 *_caps(name)])
        assert code == 0, f"preparing {run_dir}: {err[-2000:]}"

    def interrupted_run(self, name: str, run_dir: str, overrides: list[str]) -> None:
        """A run of `name` in `run_dir` stopped with Ctrl-C after its first checkpoint (what --resume needs)."""
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "nlpipe", "run", "recipe", name, "--data", "sample", "--no-progress",
             "--output-dir", run_dir, *overrides],
            cwd=self.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        latest = self.root / run_dir / "checkpoints" / "latest"
        deadline = time.monotonic() + 300
        while not latest.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 130 and latest.exists(), f"could not interrupt a run to resume: {err[-2000:]}"

    def adapt(self, argv: list[str]) -> list[str]:
        """The changes of the module docstring, for one command."""
        argv = list(argv)
        if argv[:1] == ["experiment"]:
            argv = _drop_option(argv, "--data-dir")
            if "--quick" not in argv:
                argv.append("--quick")
            if _option(argv, "--out") is None:
                argv += ["--out", f"experiments/{argv[1]}"]
            return argv
        if _option(argv, "--data-dir") is not None:
            argv = _drop_option(argv, "--data-dir") + ["--data", "sample"]
        if argv[:1] == ["compare"] and _option(argv, "--recipes") is not None:
            # A leaderboard: every matching recipe, capped like a single run, one seed.
            recipes = _option(argv, "--recipes")
            # One recipe: its tiny-model caps; several (a glob or a list) may mix model types: steps and data only.
            caps = _caps(recipes) if not any(c in recipes for c in "*?[,") else list(CAPS)
            argv = _drop_option(argv, "--seeds") + ["--seeds", "1", "--no-progress"]
            for cap in caps:
                argv += ["--set", cap]
            if _option(argv, "--data") is None:
                argv += ["--data", "sample"]
            return argv
        if argv[:2] == ["run", "recipe"]:
            name = argv[2]
            if _option(argv, "--data") is None:
                argv += ["--data", "sample"]
            run_dir = _option(argv, "--output-dir") or f"runs/{Path(name).stem}"
            caps = _caps(name)
            if "--resume" in argv:
                caps = [c for c in caps if not c.startswith("train.max_steps")]
                caps += ["train.max_steps=200", "train.max_epochs=1000", "train.checkpoint_every_steps=2"]
                if not (self.root / run_dir / "checkpoints").exists():
                    self.interrupted_run(name, run_dir, caps)
            elif "--overwrite" not in argv and (self.root / run_dir).is_dir() and any((self.root / run_dir).iterdir()):
                argv.append("--overwrite")
            argv += ["--no-progress", *caps]
            return argv
        for arg in argv[1:]:
            if arg.startswith("runs/"):
                self.ensure_run(arg.rstrip("/"))
        return argv

    def run_line(self, stages: list[list[str]]) -> tuple[int, str, str]:
        stdin = None
        code, out, err = 0, "", ""
        for stage in stages:
            argv = stage[1:]  # drop "nlpipe"
            target = None
            if ">" in argv:
                at = argv.index(">")
                argv, target = argv[:at], argv[at + 1]
            if argv[:1] == ["serve"]:
                # A server runs until stopped: here only its run folder is made; tests/serving/ starts the real
                # command in a subprocess and calls it.
                self.adapt(argv)
                code, out, err = 0, "", ""
                continue
            code, out, err = self.cli(self.adapt(argv), stdin)
            if code != 0:
                return code, out, err
            if target is not None:
                (self.root / target).write_text(out, encoding="utf-8")
            stdin = out
        return code, out, err


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_documented_command_runs(doc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    commands = doc_commands(doc)
    if not commands:
        pytest.skip(f"{doc.name} has no nlpipe command in a shell code block")
    from test_hub import FAKE_TOKEN, FakeHub

    hub = FakeHub(tmp_path / "hub").install(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("NLPIPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("NLPIPE_DATA_DIR", raising=False)
    root = tmp_path / "clone"
    root.mkdir()
    monkeypatch.chdir(root)
    reader = Reader(root, monkeypatch, capsys)
    failures = []
    for stages in commands:
        line = " | ".join(shlex.join(s) for s in stages)
        code, out, err = reader.run_line(stages)
        if code != 0:
            failures.append(f"{line}\n    exit {code}: {(err or out).strip()[-600:]}")
    assert not failures, f"{doc.name}: commands that fail as written:\n" + "\n".join(failures)
    # What the commands claim they did is there (README's main path).
    if doc.name == "README.md":
        assert (root / "runs" / "ner-bilstm" / "model.safetensors").is_file()
        assert yaml.safe_load((root / "my-recipe.yaml").read_text())["name"] == "ner-bilstm"
        assert (root / "report" / "report.md").is_file()
        assert hub.files("me/conll-bilstm-crf")


def test_the_readme_has_its_commands_in_shell_blocks() -> None:
    """The extraction itself: README's usage block is found, with pipes/redirects and comments handled."""
    commands = doc_commands(REPO / "README.md")
    flat = [stage for line in commands for stage in line]
    assert len(commands) >= 15
    assert ["nlpipe", "cache-dir"] in flat  # the trailing comment is not an argument
    assert any(s[:3] == ["nlpipe", "recipes", "show"] and ">" in s for s in flat)
    synopsis = doc_commands(REPO / "docs" / "sharing.md")
    assert all(not any(a.startswith("[") or a.endswith("]") for a in s) for line in synopsis for s in line)
