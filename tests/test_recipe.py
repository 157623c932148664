"""Recipe parsing: validation errors name the file and key; overrides; name resolution."""

from __future__ import annotations

import math
import re
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
        ({"train": {"bucket_by_length": "sometimes"}}, "key 'train.bucket_by_length': expected bool"),
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


# --------------------------------------------------------------------------- value ranges


def _numeric_fields(cls: type) -> list[str]:
    import dataclasses
    import typing

    from nlpipe.recipe import _is_numeric_hint

    hints = typing.get_type_hints(cls)
    return [f.name for f in dataclasses.fields(cls) if _is_numeric_hint(hints[f.name])]


def test_every_numeric_recipe_field_declares_its_range() -> None:
    from nlpipe.recipe import FIELD_LIMITS, BudgetSection, DataSection, EvalSection, TrainSection
    from nlpipe.tokenizer_training import TokenizerSpec

    for cls in (DataSection, TrainSection, BudgetSection, EvalSection, TokenizerSpec):
        missing = [name for name in _numeric_fields(cls) if name not in FIELD_LIMITS.get(cls.__name__, {})]
        assert not missing, f"{cls.__name__}: declare a range in recipe.FIELD_LIMITS for {missing}"


def test_every_numeric_model_setting_has_a_range_rule() -> None:
    """Each registry config's int/float settings (sizes, dropouts, ids, epsilons) match a `model_limit` rule."""
    import inspect

    from nlpipe.model_registry import MODELS, _import, config_fields, model_limit

    unruled = []
    for model_type, entry in MODELS.items():
        config = _import(entry.config_class)()
        for name in config_fields(type(config)):
            value = getattr(config, name, None)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and model_limit(name) is None:
                unruled.append(f"{model_type}.{name}")
    assert not unruled, f"add a rule to model_registry._MODEL_LIMIT_RULES for {unruled}"
    assert inspect.isfunction(model_limit)


@pytest.mark.parametrize(
    ("override", "key", "allowed"),
    [
        ("train.batch_size=-1", "train.batch_size", "[1, 2147483647]"),
        ("train.batch_size=0", "train.batch_size", "[1, "),
        ("train.max_steps=0", "train.max_steps", "[1, "),
        ("train.max_epochs=-1", "train.max_epochs", "[0, "),
        ("train.gradient_accumulation_steps=0", "train.gradient_accumulation_steps", "[1, "),
        ("train.batch_tokens=-5", "train.batch_tokens", "[1, "),
        ("train.learning_rate=0", "train.learning_rate", "> 0"),
        ("train.learning_rate=-1e-3", "train.learning_rate", "> 0"),
        ("train.learning_rate=.inf", "train.learning_rate", "> 0 (finite)"),
        ("train.learning_rate=nan", "train.learning_rate", "> 0 (finite)"),
        ("train.max_grad_norm=0", "train.max_grad_norm", "> 0"),
        ("train.weight_decay=-0.1", "train.weight_decay", ">= 0"),
        ("train.momentum=1.0", "train.momentum", "[0, 1)"),
        ("train.warmup_steps=-1", "train.warmup_steps", "[0, "),
        ("train.seed=-1", "train.seed", "[0, 4294967295]"),
        ("train.seed=4294967296", "train.seed", "[0, 4294967295]"),
        ("train.eval_every_steps=-1", "train.eval_every_steps", "[0, "),
        ("train.log_every_steps=0", "train.log_every_steps", "[1, "),
        ("train.bptt_length=0", "train.bptt_length", "[1, "),
        ("train.max_train_minutes=0", "train.max_train_minutes", "> 0"),
        ("data.max_length=0", "data.max_length", "[1, "),
        ("data.max_length=99999999999999999999", "data.max_length", "[1, 2147483647]"),
        ("data.max_train_examples=0", "data.max_train_examples", "[1, "),
        ("eval.batch_size=-2", "eval.batch_size", "[1, "),
        ("model.hidden_size=0", "model.hidden_size", "[1, "),
        ("model.embedding_dim=-3", "model.embedding_dim", "[1, "),
        ("model.num_layers=0", "model.num_layers", "[1, "),
        ("model.dropout=-0.1", "model.dropout", "[0, 1)"),
        ("model.embedding_dropout=1", "model.embedding_dropout", "[0, 1)"),
        ("model.word_dropout=2", "model.word_dropout", "[0, 1)"),
        ("model.max_word_chars=0", "model.max_word_chars", "[1, "),
        ("model.initializer_range=0", "model.initializer_range", "> 0"),
        ("generate.num_beams=0", "generate.num_beams", "[1, "),
        ("generate.top_p=0", "generate.top_p", "(0, 1]"),
        ("generate.temperature=-1", "generate.temperature", "> 0"),
    ],
)
def test_values_out_of_range_name_file_key_value_and_range(tmp_path: Path, override: str, key: str,
                                                            allowed: str) -> None:
    path = write(tmp_path, BASE)
    with pytest.raises(NlpipeError) as err:
        load_recipe(str(path), [override])
    message = str(err.value)
    assert message.startswith(f"{path}: key '{key}': ")
    assert "out of range" in message and allowed in message, message
    shown = float(message.split(f"key '{key}': ")[1].split(" is out of range")[0])
    given = float(override.split("=", 1)[1].lstrip("."))
    assert shown == given or math.isnan(shown) and math.isnan(given), message


@pytest.mark.parametrize("model", [
    {"type": "bert", "num_attention_heads": 0}, {"type": "bert", "hidden_dropout_prob": 1.5},
    {"type": "bert", "layer_norm_eps": 0}, {"type": "bert", "max_position_embeddings": 0},
    {"type": "gpt2", "n_layer": 0}, {"type": "gpt2", "attn_pdrop": -0.5}, {"type": "gpt2", "n_positions": -1},
    {"type": "marian", "d_model": 0}, {"type": "marian", "encoder_layerdrop": 1},
    {"type": "rnn_seq2seq", "hard_attention_k": 0}, {"type": "rnn_lm", "num_layers": 0},
])
def test_model_sizes_of_every_family_are_range_checked(tmp_path: Path, model: dict) -> None:
    task = {"bert": "token-classification", "gpt2": "causal-lm", "rnn_lm": "causal-lm"}.get(model["type"], "translation")
    data = {"token-classification": "conll2003", "causal-lm": "ptb", "translation": "multi30k"}[task]
    path = write(tmp_path, {**BASE, "task": task, "data": {"dataset": data}, "model": model})
    key = next(k for k in model if k != "type")
    with pytest.raises(NlpipeError, match=rf"key 'model\.{key}': .* is out of range"):
        load_recipe(str(path))


def test_values_at_the_edges_of_their_range_are_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, {**BASE, "train": {"batch_size": 1, "seed": 2**32 - 1, "momentum": 0.0, "warmup_steps": 0},
                            "model": {"type": "rnn_tagger", "dropout": 0.0, "hidden_size": 1}})
    recipe = load_recipe(str(path))
    assert recipe.train.seed == 2**32 - 1 and recipe.model["dropout"] == 0.0


# --------------------------------------------------------------------------- YAML


def test_yaml_no_yes_off_on_are_strings_where_strings_are_expected(tmp_path: Path) -> None:
    text = yaml.safe_dump(BASE) + "train:\n  mixed_precision: no\n  bucket_by_length: off\n"
    recipe = load_recipe(str(write(tmp_path, text)))
    assert recipe.train.mixed_precision == "no" and recipe.train.bucket_by_length is False
    recipe = load_recipe(str(write(tmp_path, BASE)), ["train.mixed_precision=no", "train.bucket_by_length=yes",
                                                      "model.bidirectional=no", "hub.private=on", "name=off"])
    assert recipe.train.mixed_precision == "no" and recipe.train.bucket_by_length is True
    assert recipe.model["bidirectional"] is False and recipe.hub.private is True and recipe.name == "off"


def test_yaml_exponent_floats_are_numbers_in_free_form_sections(tmp_path: Path) -> None:
    recipe = load_recipe(str(write(tmp_path, yaml.safe_dump(BASE) + "generate: {temperature: 5e-1}\n")),
                         ["model.initializer_range=1e-2"])
    assert recipe.model["initializer_range"] == pytest.approx(0.01) and recipe.generate["temperature"] == 0.5


@pytest.mark.parametrize(("text", "message"), [
    ("name: a\nname: b\n", r"r\.yaml:2: duplicate key 'name' \(first at line 1\)"),
    ("train:\n  seed: 1\ntrain:\n  seed: 2\n", r"r\.yaml:3: duplicate key 'train' \(first at line 1\)"),
    ("model:\n  type: rnn_tagger\n  hidden_size: 8\n  hidden_size: 16\n", r"r\.yaml:4: duplicate key 'hidden_size'"),
])
def test_duplicate_yaml_keys_are_errors_naming_the_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(NlpipeError, match=message):
        load_recipe(str(write(tmp_path, text)))


def test_yaml_merge_keys_may_override_without_a_duplicate_error() -> None:
    from nlpipe.recipe import load_yaml_text

    merged = load_yaml_text("a: &d {x: 1, y: 2}\nb:\n  <<: *d\n  y: 3\n", "t.yaml")
    assert merged["b"] == {"x": 1, "y": 3}


@pytest.mark.parametrize("text", [
    "".join(f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}" if i else "1"] * 10) + "]\n" for i in range(8)),
    "a: &a [*a]\n",
    "a: &a {b: *a}\n",
    "x: " + "[" * 5000 + "]" * 5000 + "\n",
])
def test_yaml_bombs_and_cycles_are_bounded_errors(tmp_path: Path, text: str) -> None:
    with pytest.raises(NlpipeError) as err:
        load_recipe(str(write(tmp_path, text)))
    assert str(err.value).startswith(str(tmp_path / "r.yaml")) and len(str(err.value)) < 300


def test_error_messages_quote_at_most_a_few_hundred_characters_of_a_value(tmp_path: Path) -> None:
    huge = "x" * 1_000_000
    for override in (f"train.max_epochs={huge}", f"task={huge}", f"model.type={huge}", f"{huge}=1",
                     f"model.{huge}=1", f"model.hidden_size=[{', '.join(['1'] * 100_000)}]"):
        with pytest.raises(NlpipeError) as err:
            load_recipe(str(write(tmp_path, BASE)), [override])
        assert len(str(err.value)) < 600, str(err.value)[:300]


@pytest.mark.parametrize(("model", "expected"), [
    ({"type": "rnn_tagger", "hidden_size": [8]}, "key 'model.hidden_size': expected int, got [8] (list)"),
    ({"type": "rnn_tagger", "bidirectional": "maybe"}, "key 'model.bidirectional': expected bool, got 'maybe'"),
    ({"type": "rnn_tagger", "dropout": "lots"}, "key 'model.dropout': expected float, got 'lots'"),
    ({"type": "bert", "num_hidden_layers": 2.5}, "key 'model.num_hidden_layers': expected int, got 2.5"),
])
def test_model_settings_of_the_wrong_type_name_the_key(tmp_path: Path, model: dict, expected: str) -> None:
    with pytest.raises(NlpipeError, match=re.escape(expected)):
        load_recipe(str(write(tmp_path, {**BASE, "model": model})))


def test_model_settings_of_union_types_and_ints_for_floats_are_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, {**BASE, "task": "translation", "data": {"dataset": "multi30k"},
                            "model": {"type": "rnn_seq2seq", "eos_token_id": [2, 3], "dropout": 0}})
    assert load_recipe(str(path)).model["eos_token_id"] == [2, 3]


def test_eval_splits_must_be_known_splits(tmp_path: Path) -> None:
    with pytest.raises(NlpipeError, match=r"key 'eval\.splits': unknown split 'dev'; use train, validation, test"):
        load_recipe(str(write(tmp_path, BASE)), ["eval.splits=[validation, dev]"])


@pytest.mark.parametrize(("dataset", "message"), [
    ("conll", r"key 'data\.dataset': unknown data set 'conll'; known: conll2003"),
    ("multi30k", r"key 'data\.dataset': 'multi30k' holds translation data, which task 'token-classification' cannot"),
    ("ptb", r"'ptb' holds lm data"),
])
def test_data_set_is_checked_with_the_recipe(tmp_path: Path, dataset: str, message: str) -> None:
    with pytest.raises(NlpipeError, match=message):
        load_recipe(str(write(tmp_path, {**BASE, "data": {"dataset": dataset}})))


@pytest.mark.parametrize("override", [
    "train.batch_size=1" + "0" * 400, "train.learning_rate=1" + "0" * 400, "model.initializer_range=1" + "0" * 400,
    "train.batch_size=1" + "0" * 5000, "description=2024-13-45",
])
def test_huge_numbers_and_unreadable_values_are_one_line_errors(tmp_path: Path, override: str) -> None:
    with pytest.raises(NlpipeError) as err:
        load_recipe(str(write(tmp_path, BASE)), [override])
    assert len(str(err.value)) < 600 and "\n" not in str(err.value)


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
    def setting(recipe, key: str):  # "train.budget.tokens" through sections, nested sections and dicts
        node = recipe
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else getattr(node, part)
        return node

    for key, value in raw["sample"].items():
        assert setting(quick, key) == value, key
    # A user's override beats the sample setting.
    key, value = next(iter(raw["sample"].items()))
    mine = load_recipe(name, [f"{key}=1"], sample=True)
    assert setting(mine, key) == 1


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


def test_a_length_given_as_an_override_replaces_the_recipes_budget(tmp_path: Path) -> None:
    """A recipe sized in minutes can be run shorter (max_epochs) or under another budget kind (nlpipe compare's
    tokens): the length given last wins, layer by layer (file, sample settings, overrides)."""
    path = write(tmp_path, {**BASE, "train": {"budget": {"minutes": 70}, "max_epochs": 12},
                            "sample": {"train.max_epochs": 3}})
    assert load_recipe(str(path)).train.budget.minutes == 70
    assert load_recipe(str(path), ["train.seed=3", "train.max_steps=5"]).train.budget.minutes == 70  # not a length
    tokens = load_recipe(str(path), ["train.budget.tokens=2e6"]).train.budget
    assert (tokens.tokens, tokens.minutes) == (2e6, None)
    epochs = load_recipe(str(path), ["train.max_epochs=2"]).train
    assert (epochs.max_epochs, epochs.budget.minutes) == (2, None)
    assert load_recipe(str(path), ["train.budget.minutes=null"]).train.budget.minutes is None
    quick = load_recipe(str(path), sample=True).train  # the sample's max_epochs replaces the file's budget
    assert (quick.max_epochs, quick.budget.minutes) == (3, None)
    steps = load_recipe(str(path), ["train.budget.steps=9"], sample=True).train.budget
    assert (steps.steps, steps.minutes) == (9, None)
    # Two kinds on one command line are still ambiguous; the file itself is left as it was.
    with pytest.raises(NlpipeError, match="key 'train.budget': sets steps and tokens; give exactly one"):
        load_recipe(str(path), ["train.budget.tokens=2e6", "train.budget.steps=3"])
    assert yaml.safe_load(path.read_text())["train"]["budget"] == {"minutes": 70}
