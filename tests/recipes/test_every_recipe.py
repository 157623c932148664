"""Every recipe in recipes/ runs its sample path end to end (`--data sample`: the recipe's ``sample`` settings
applied), capped here to a few steps and a tiny model so the whole set fits CI; benchmarks/sample_runs.py times the
uncapped sample runs (BENCHMARKS.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tiny_models import TINY_MODEL

from nlpipe.recipe import list_recipes, load_recipe
from nlpipe.run import run_recipe

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted(p.stem for p in (REPO / "recipes").glob("*.yaml"))

# Small and quick, whatever the recipe's real sizes are.
SHRINK = ["train.max_steps=3", "train.max_epochs=1", "data.max_train_examples=96", "data.max_eval_examples=12",
          "train.batch_size=16", "eval.batch_size=16", "train.eval_every_steps=null", "eval.splits=[test]",
          "train.budget.tokens=null"]


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_runs_on_sample_data(name: str, tmp_path: Path) -> None:
    recipe = load_recipe(name, sample=True)
    overrides = SHRINK + TINY_MODEL.get(recipe.model["type"], [])
    if recipe.model.get("init_from"):  # e.g. runs/pretrain-bert: run that recipe first, tiny, and start from it
        source = Path(recipe.model["init_from"]).name
        source_model = load_recipe(source).model["type"]
        run_recipe(source, SHRINK + TINY_MODEL.get(source_model, []), data="sample", output_dir=tmp_path / source,
                   progress=False)
        overrides = SHRINK + [f"model.init_from={tmp_path / source}"]
    if recipe.generate:
        overrides += [f"generate.{k}={v}" for k, v in (("max_new_tokens", 8), ("num_beams", 1))]
    result = run_recipe(name, overrides, data="sample", output_dir=tmp_path / name, progress=False)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert recipe.eval.metric in metrics["test"], metrics["test"].keys()
    assert metrics["train"]["steps"] >= 1
    assert (result.run_dir / "model.safetensors").is_file()
    # The sample path is the one taken: the recipe's sample settings are applied and recorded, ours win over them.
    assert recipe.sample_applied
    assert json.loads((result.run_dir / "run_info.json").read_text())["sample_settings"] == recipe.sample_applied
    resolved_text = (result.run_dir / "recipe.yaml").read_text()
    assert "# sample settings applied (--data sample): " in resolved_text
    resolved = yaml.safe_load(resolved_text)
    ours = {o.split("=", 1)[0] for o in overrides}
    for item in recipe.sample_applied:
        key, value = item.split("=", 1)
        section, field = key.split(".", 1)
        if key not in ours:
            assert resolved[section][field] == yaml.safe_load(value), key


def test_packaged_and_checkout_recipes_agree() -> None:
    assert set(RECIPES) <= set(list_recipes())
