"""`nlpipe recipes show NAME --all`: every key the validator accepts, with value, type, default, meaning."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from nlpipe.model_registry import MODELS, _import, config_fields
from nlpipe.recipe import Recipe, list_recipes, load_recipe
from nlpipe.recipe_settings import format_settings, recipe_settings
from nlpipe.tokenizer_training import TokenizerSpec

REPO = Path(__file__).resolve().parents[1]


def accepted_keys(recipe: Recipe) -> set[str]:
    """What validation accepts, read straight from the classes it checks against (not from the listing)."""
    keys: set[str] = set()

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name == "source":
                continue
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{prefix}{f.name}.")
            elif f.name not in ("model", "tokenizer", "generate") or prefix:
                keys.add(f"{prefix}{f.name}")

    walk(Recipe, "")
    keys |= {"model.type", "tokenizer.spec"}
    keys |= {f"model.{name}" for name in config_fields(_import(MODELS[recipe.model["type"]].config_class))}
    if recipe.tokenizer.get("spec") != "init_from":  # init_from reuses the source's tokenizer: no spec fields
        keys |= {f"tokenizer.{f.name}" for f in dataclasses.fields(TokenizerSpec) if f.name != "name"}
    return keys


@pytest.mark.parametrize("name", list(list_recipes()))
def test_every_accepted_key_is_listed_with_a_meaning(name: str) -> None:
    recipe = load_recipe(name)
    settings = {s.key: s for s in recipe_settings(recipe)}
    missing = accepted_keys(recipe) - set(settings)
    assert not missing, f"recipes show --all lacks {sorted(missing)}"
    for key, setting in settings.items():
        if not key.startswith("model."):  # model docs come from the config class docstrings
            assert setting.doc, f"{key} has no meaning: add a docstring below its field"


def test_values_are_resolved_and_overrides_show() -> None:
    recipe = load_recipe("ner-bilstm", ["train.max_steps=7"])
    settings = {s.key: s for s in recipe_settings(recipe)}
    assert settings["train.max_steps"].value == 7 and settings["train.max_steps"].default is None
    assert settings["train.max_epochs"].value == recipe.train.max_epochs
    assert settings["model.hidden_size"].value == recipe.model["hidden_size"]
    assert settings["model.use_crf"].value is False  # not in the file: the config class's default
    assert settings["data.dataset"].required
    text = format_settings(list(settings.values()))
    line = next(x for x in text.splitlines() if x.startswith("train.max_steps "))
    assert line.split()[1:4] == ["7", "int", "|"] and "optimizer steps" in line


def test_listed_keys_are_accepted_back_by_the_validator() -> None:
    """Each listed recipe-class key, set to its listed value, passes validation (the listing is not invented)."""
    recipe = load_recipe("ner-bilstm")
    for s in recipe_settings(recipe):
        if s.key.startswith(("train.", "data.", "eval.", "hub.")) and s.value is not None:
            load_recipe("ner-bilstm", [f"{s.key}={s.value!r}" if isinstance(s.value, str) else f"{s.key}={s.value}"])


def test_cli_show_all_and_validate_from_stdin(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    shown = subprocess.run([sys.executable, "-m", "nlpipe", "recipes", "show", "ner-bilstm", "--all"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    listed = {line.split()[0] for line in shown.stdout.splitlines()[1:]}
    assert accepted_keys(load_recipe("ner-bilstm")) <= listed
    assert {"train.max_steps", "data.max_eval_examples", "train.max_train_minutes"} <= listed
    # the README's pipe: show a recipe, validate it from stdin
    text = subprocess.run([sys.executable, "-m", "nlpipe", "recipes", "show", "ner-bilstm"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120).stdout
    ok = subprocess.run([sys.executable, "-m", "nlpipe", "recipes", "validate", "-"], input=text, cwd=tmp_path,
                        env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.startswith("ok: <stdin>"), ok.stderr
    bad = subprocess.run([sys.executable, "-m", "nlpipe", "recipes", "validate", "-"],
                         input=text.replace("max_length:", "max_lenght:"), cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and bad.stderr.strip().startswith("error: <stdin>: unknown key 'data.max_lenght'")
