"""A non-editable install (a built wheel) finds every recipe, tokenizer spec and metric module."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CHECK = """
import os, sys
# Drop the editable-install finder and the checkout so only the wheel's copy can be imported.
sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path = [p for p in sys.path if p not in ("", ".") and os.path.abspath(p) != sys.argv[2]]
sys.path.insert(0, sys.argv[1])
import nlpipe
assert nlpipe.__file__.startswith(sys.argv[1]), nlpipe.__file__
from nlpipe.recipe import list_recipes, load_recipe
from nlpipe.tokenizer_training import list_specs
from nlpipe.metrics import load_metric
names = list_recipes()
assert "ner-bilstm" in names, names
for name in names:
    load_recipe(name)
assert {"word-level", "wordpiece", "bpe", "unigram", "sentencepiece"} <= set(list_specs())
load_metric("seqeval")
print("OK", len(names))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(REPO)],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    return next(out.glob("nlpipe-*.whl"))


def test_wheel_contains_data_folders(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    recipes = {Path(n).name for n in names if n.startswith("nlpipe/recipes/")}
    assert {p.name for p in (REPO / "recipes").glob("*.yaml")} <= recipes
    specs = {Path(n).name for n in names if n.startswith("nlpipe/tokenizer_specs/")}
    assert {p.name for p in (REPO / "tokenizers").glob("*.yaml")} <= specs
    assert "nlpipe/metrics/nlpipe_seqeval/nlpipe_seqeval.py" in names
    assert "nlpipe/model_fields.json" in names  # `recipes validate` checks model keys against it
    static = {f"nlpipe/serving/static/{p.name}" for p in (REPO / "nlpipe" / "serving" / "static").iterdir()}
    assert static and static <= set(names), "the `nlpipe serve` page ships in the wheel"
    assert "nlpipe/export/onnx_runner.py" in names  # copied into every ONNX export
    assert not any(n.startswith("tokenizers/") or n == "cli.py" for n in names), "no top-level tokenizers/ or cli"


def test_installed_wheel_finds_recipes_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    result = subprocess.run([sys.executable, "-c", CHECK, str(target), str(REPO)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("OK")
