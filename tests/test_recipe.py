"""Recipe parsing: validation errors name the file and key; overrides; name resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nlpipe.errors import NlpipeError
from nlpipe.recipe import apply_overrides, list_recipes, load_recipe, parse_recipe, resolve_recipe_path

BASE = {
    "name": "t",
    "task": "token-classification",
    "data": {"dataset": "conll2003"},
    "tokenizer": {"spec": "word-level"},
    "model": {"type": "rnn_tagger", "hidden_size": 16},
}


def write(tmp_path: Path, data: dict | str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_valid_recipe_parses_with_typed_sections(tmp_path: Path) -> None:
    recipe = load_recipe(str(write(tmp_path, {**BASE, "train": {"learning_rate": "1e-3", "max_epochs": 2}})))
    assert recipe.train.learning_rate == pytest.approx(1e-3)  # YAML reads 1e-3 as a string: coerced
    assert recipe.train.max_epochs == 2 and recipe.train.batch_size == 32
    assert recipe.model == {"type": "rnn_tagger", "hidden_size": 16}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"trian": {}}, "unknown key 'trian'"),
        ({"train": {"max_epoch": 3}}, "unknown key 'train.max_epoch'"),
        ({"train": {"max_epochs": "three"}}, "key 'train.max_epochs': expected int"),
        ({"train": {"bucket_by_length": "yes"}}, "key 'train.bucket_by_length': expected bool"),
        ({"eval": {"splits": "test"}}, "key 'eval.splits': expected a list"),
        ({"task": "dancing"}, "key 'task': unknown task 'dancing'"),
        ({"model": {"type": "rnn_tagger", "hiden_size": 3}}, "unknown key 'model.hiden_size'"),
        ({"model": {"type": "lstm9000"}}, "unknown model 'lstm9000'"),
        ({"model": {"type": "rnn_seq2seq"}}, "does not do task 'token-classification'"),
        ({"train": {"optimizer": "adagrad"}}, "key 'train.optimizer'"),
    ],
)
def test_invalid_recipes_name_file_and_key(tmp_path: Path, change: dict, message: str) -> None:
    path = write(tmp_path, {**BASE, **change})
    with pytest.raises(NlpipeError) as info:
        load_recipe(str(path))
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_missing_required_field(tmp_path: Path) -> None:
    data = {k: v for k, v in BASE.items() if k != "data"}
    with pytest.raises(NlpipeError, match="missing required key 'data'"):
        load_recipe(str(write(tmp_path, data)))
    with pytest.raises(NlpipeError, match="missing required key 'data.dataset'"):
        load_recipe(str(write(tmp_path, {**BASE, "data": {"max_length": 3}})))


def test_malformed_yaml_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\ntask: [unclosed\nmodel: {}\n")
    with pytest.raises(NlpipeError) as info:
        load_recipe(str(path))
    assert f"{path}:" in str(info.value) and "malformed YAML" in str(info.value)


def test_overrides_are_typed_and_validated(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    recipe = load_recipe(str(path), ["train.max_epochs=3", "model.hidden_size=128", "push_to_hub=true"])
    assert recipe.train.max_epochs == 3 and recipe.model["hidden_size"] == 128 and recipe.push_to_hub is True
    with pytest.raises(NlpipeError, match="unknown key 'train.nope'"):
        load_recipe(str(path), ["train.nope=1"])
    with pytest.raises(NlpipeError, match="expected key.sub=value"):
        apply_overrides({}, ["train.max_epochs"], "x")


def test_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    packaged = resolve_recipe_path("ner-bilstm")
    assert packaged.name == "ner-bilstm.yaml"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipes").mkdir()
    local = write(tmp_path / "recipes", {**BASE, "name": "local-copy"}, "ner-bilstm.yaml")
    assert resolve_recipe_path("ner-bilstm").resolve() == local.resolve()  # ./recipes/ wins over the package
    explicit = write(tmp_path, BASE, "mine.yaml")
    assert resolve_recipe_path(str(explicit)) == explicit
    with pytest.raises(NlpipeError, match="unknown recipe 'nope'.*ner-bilstm"):
        resolve_recipe_path("nope")
    with pytest.raises(NlpipeError, match="recipe file not found"):
        resolve_recipe_path("missing.yaml")


@pytest.mark.parametrize("name", sorted(list_recipes()))
def test_every_shipped_recipe_validates_and_names_its_command(name: str) -> None:
    path = list_recipes()[name]
    first_line = path.read_text().splitlines()[0]
    assert first_line.startswith("# nlpipe run recipe " + name), f"{path}: first line must be the command"
    recipe = load_recipe(str(path))
    assert recipe.name == name


def test_parse_recipe_accepts_tokenizer_shorthand() -> None:
    recipe = parse_recipe({**BASE, "tokenizer": "word-level"})
    assert recipe.tokenizer == {"spec": "word-level"}


# ----------------------------------------------------------------------------------- the sample settings


@pytest.mark.parametrize("name", sorted(list_recipes()))
def test_sample_settings_apply_only_on_sample_data_and_user_overrides_win(name: str) -> None:
    """Every recipe has a quick sample run; the real-data schedule is the YAML's, untouched."""
    raw = yaml.safe_load(resolve_recipe_path(name).read_text())
    assert raw.get("sample"), f"{name} has no 'sample' settings: --data sample would run the full schedule"
    real = load_recipe(name)
    assert real.sample_applied == []
    assert real.train.max_epochs == raw["train"].get("max_epochs", real.train.max_epochs)
    quick = load_recipe(name, sample=True)
    assert quick.sample_applied and len(quick.sample_applied) == len(raw["sample"])
    for key, value in raw["sample"].items():
        section, field = key.split(".", 1)
        node = getattr(quick, section)
        got = node.get(field) if isinstance(node, dict) else getattr(node, field)
        assert got == value, key
    # A user's override beats the sample setting.
    key, value = next(iter(raw["sample"].items()))
    section, field = key.split(".", 1)
    mine = load_recipe(name, [f"{key}=1"], sample=True)
    node = getattr(mine, section)
    assert (node.get(field) if isinstance(node, dict) else getattr(node, field)) == 1


@pytest.mark.parametrize(
    ("sample", "message"),
    [
        ({"train.max_step": 3}, "unknown key 'train.max_step'"),
        ({"train.max_steps": "many"}, "key 'train.max_steps': expected int"),
        ({"max_steps": 3}, "key 'sample.max_steps': expected a dotted setting"),
        ([1, 2], "key 'sample': expected a mapping"),
        ({"model.hiden_size": 3}, "unknown key 'model.hiden_size'"),
    ],
)
def test_bad_sample_settings_are_found_without_a_sample_run(tmp_path: Path, sample: object, message: str) -> None:
    path = write(tmp_path, {**BASE, "sample": sample})
    with pytest.raises(NlpipeError) as info:
        load_recipe(str(path))  # validated even when the run is not on sample data
    assert str(path) in str(info.value) and message in str(info.value)
