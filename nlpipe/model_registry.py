"""Short registry names for the models a recipe can ask for (``model.type: rnn_tagger``).

Each entry says which task it serves, which config class holds its settings, and which Auto class
builds it. Recipe keys under ``model:`` are checked against the config class's fields, so a typo
is an error naming the key instead of a silently ignored setting. Transformer models use
transformers' own classes with small from-scratch configs; nothing is re-implemented here.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import NlpipeError, shorten


@dataclass(frozen=True)
class ModelEntry:
    """One registry entry."""

    tasks: tuple[str, ...]
    config_class: str
    """Import path of the config class, ``module:Class``."""
    auto_class: str
    """Name of the transformers Auto class that builds the model (AutoModelForTokenClassification, ...)."""
    defaults: tuple[tuple[str, Any], ...] = ()
    """Config values nlpipe sets unless the recipe does (small from-scratch sizes)."""


MODELS: dict[str, ModelEntry] = {
    "rnn_tagger": ModelEntry(
        ("token-classification",),
        "nlpipe.models.rnn_tagger.configuration_rnn_tagger:RnnTaggerConfig",
        "AutoModelForTokenClassification",
    ),
    "bert": ModelEntry(
        ("token-classification", "masked-lm"),
        "transformers:BertConfig",
        "AutoModelForTokenClassification",
        (("hidden_size", 256), ("num_hidden_layers", 4), ("num_attention_heads", 4), ("intermediate_size", 1024)),
    ),
    "rnn_seq2seq": ModelEntry(
        ("translation", "summarization"),
        "nlpipe.models.rnn_seq2seq.configuration_rnn_seq2seq:RnnSeq2SeqConfig",
        "AutoModelForSeq2SeqLM",
    ),
    "marian": ModelEntry(
        ("translation", "summarization"),
        "transformers:MarianConfig",
        "AutoModelForSeq2SeqLM",
        (
            ("d_model", 256), ("encoder_layers", 3), ("decoder_layers", 3), ("encoder_attention_heads", 4),
            ("decoder_attention_heads", 4), ("encoder_ffn_dim", 1024), ("decoder_ffn_dim", 1024),
            # From scratch: scale embeddings by sqrt(d_model) as in Vaswani et al. (Marian's default is off
            # because its pretrained checkpoints were trained that way); ReLU-free GELU and dropout 0.1 kept.
            ("scale_embedding", True), ("max_position_embeddings", 256),
        ),
    ),
    "rnn_lm": ModelEntry(
        ("causal-lm",),
        "nlpipe.models.rnn_lm.configuration_rnn_lm:RnnLmConfig",
        "AutoModelForCausalLM",
    ),
    "gpt2": ModelEntry(
        ("causal-lm",),
        "transformers:GPT2Config",
        "AutoModelForCausalLM",
        (("n_embd", 256), ("n_layer", 4), ("n_head", 4), ("n_positions", 256)),
    ),
}


# Model configs are transformers' own classes as well as nlpipe's, so their numeric settings get their range
# from the name, the way transformers names them; the first matching rule wins. A test checks that every
# numeric setting of every registry config matches a rule.
_MODEL_LIMIT_RULES: tuple[tuple[str, str], ...] = (
    (r"dropout|pdrop|layerdrop", "PROBABILITY"),
    (r"_token_id$", "TOKEN_ID"),
    (r"eps$|epsilon$|^initializer_range$|^init_std$", "POSITIVE"),
    (r"^chunk_size_feed_forward$", "OPTIONAL_COUNT"),
    (r"(_size|_dim|_layers|_heads|_embeddings|_chars|_length|_k)$|^(n|num)_|^d_model$", "COUNT"),
)


def model_limit(key: str) -> Any:
    """The allowed range (a `nlpipe.recipe.Limit`) of numeric model setting ``key``, or None if no rule names it."""
    from . import recipe

    named = {"TOKEN_ID": recipe.Limit(0, recipe.MAX_COUNT)}
    for pattern, limit in _MODEL_LIMIT_RULES:
        if re.search(pattern, key):
            return named.get(limit) or getattr(recipe, limit)
    return None


def check_model_values(model: dict[str, Any], source: str) -> None:
    """Range-check the numeric settings of a recipe's ``model:`` section (counts >= 1, dropout in [0, 1), ...).

    Numbers no rule names must still be finite. Raises an NlpipeError naming the file, key, value and range.
    """
    from .recipe import Limit

    for key, value in model.items():
        (model_limit(key) or Limit()).check(value, f"{source}: key 'model.{key}'")


def _import(path: str) -> Any:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def get_entry(model_type: str, source: str = "recipe") -> ModelEntry:
    """Look up a registry name; unknown names are an NlpipeError listing the known ones."""
    if not isinstance(model_type, str) or model_type not in MODELS:
        raise NlpipeError(
            f"{source}: key 'model.type': unknown model {shorten(model_type)}; known: {', '.join(MODELS)}"
        )
    return MODELS[model_type]


def config_fields(config_class: type) -> set[str]:
    """Names a config class accepts: its dataclass fields plus the base config's."""
    names = {f.name for f in dataclasses.fields(config_class)} if dataclasses.is_dataclass(config_class) else set()
    import inspect

    names |= set(inspect.signature(config_class.__init__).parameters) - {"self", "kwargs"}
    return names


# ----------------------------------------------------------------------------- field index
# Checking `model.*` keys against the config classes would import transformers and torch (~5 s of
# CPU) on every `nlpipe recipes validate` / `recipes show --all`. The keys, types, defaults and
# one-line docs are therefore read once from the live classes into model_fields.json, shipped with
# the package; tests/test_model_registry.py fails (with the command to rerun) whenever the file no
# longer equals what the live classes give, so it cannot drift from them.
FIELD_INDEX = Path(__file__).with_name("model_fields.json")
_ARG_DOC = re.compile(r"^ {4}(\w+) \(.*\):\s*$")


def _arg_docs(doc: str | None) -> dict[str, str]:
    """First sentence of each ``name (`type`, ...):`` entry of a Hugging Face style "Args:" docstring."""
    found: dict[str, str] = {}
    lines = (doc or "").splitlines()
    indent = min((len(x) - len(x.lstrip()) for x in lines[1:] if x.strip()), default=0)
    lines = [x[indent:] if i else x for i, x in enumerate(lines)]
    for i, line in enumerate(lines):
        match = _ARG_DOC.match(line)
        if not match:
            continue
        text = []
        for follow in lines[i + 1:]:
            if not follow.startswith(" " * 8) or _ARG_DOC.match(follow):
                break
            text.append(follow.strip())
        sentence = re.split(r"(?<=\.)\s+(?=[A-Z`(])", " ".join(text), maxsplit=1)[0]
        found.setdefault(match.group(1), sentence)
    return found


def _json_value(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return repr(value)


def live_model_fields(model_type: str) -> list[dict[str, Any]]:
    """The fields of a registry model's config class (name, type, default, doc), read from the class."""
    entry = get_entry(model_type)
    config_class = _import(entry.config_class)
    docs: dict[str, str] = {}
    for klass in reversed(config_class.__mro__):  # a subclass's doc wins over its base's
        docs.update(_arg_docs(klass.__doc__))
    registry_defaults = dict(entry.defaults)
    fields = []
    names = [f.name for f in dataclasses.fields(config_class)] if dataclasses.is_dataclass(config_class) else []
    names += sorted(config_fields(config_class) - set(names))
    by_name = {f.name: f for f in dataclasses.fields(config_class)} if names else {}
    for name in names:
        f = by_name.get(name)
        default = None
        if f is not None and f.default is not dataclasses.MISSING:
            default = f.default
        elif f is not None and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        fields.append({
            "name": name,
            "type": (f.type if isinstance(f.type, str) else _type_label(f.type)) if f is not None else "",
            "default": _json_value(registry_defaults.get(name, default)),
            "doc": docs.get(name, ""),
        })
    return fields


def _type_label(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")


def write_field_index(path: Path = FIELD_INDEX) -> None:
    """Regenerate model_fields.json from the live config classes: ``python -m nlpipe.model_registry``."""
    blocks = []
    for name in MODELS:  # one field per line: readable diffs when a config class changes
        rows = ",\n".join("  " + json.dumps(f, ensure_ascii=False) for f in live_model_fields(name))
        blocks.append(f"{json.dumps(name)}: [\n{rows}\n ]")
    path.write_text("{\n " + ",\n ".join(blocks) + "\n}\n", encoding="utf-8")


@functools.cache
def model_fields(model_type: str) -> list[dict[str, Any]]:
    """A registry model's config fields from the shipped index (see above); live if it lacks the model."""
    index = json.loads(FIELD_INDEX.read_text(encoding="utf-8")) if FIELD_INDEX.is_file() else {}
    if model_type in index:
        return index[model_type]
    return live_model_fields(model_type)


def validate_model_section(recipe: Any) -> None:
    """Check ``model.type`` exists for the recipe's task and every other key is a config field."""
    model_type = recipe.model["type"]
    entry = get_entry(model_type, recipe.source)
    if recipe.task not in entry.tasks:
        raise NlpipeError(
            f"{recipe.source}: key 'model.type': '{model_type}' does not do task '{recipe.task}' "
            f"(it does {', '.join(entry.tasks)})"
        )
    try:
        fields = {f["name"]: f for f in model_fields(model_type)}
    except (ImportError, AttributeError) as exc:
        raise NlpipeError(f"{recipe.source}: key 'model.type': model '{model_type}' is not available ({exc})") from exc
    class_name = entry.config_class.rsplit(":", 1)[1]
    for key in recipe.model:
        if key not in ("type", "init_from") and key not in fields:
            raise NlpipeError(
                f"{recipe.source}: unknown key {shorten('model.' + str(key))} for model '{model_type}' "
                f"({class_name}); check the spelling against its documented arguments"
            )
    # Types and defaults come from the field index too, so `recipes validate` never imports torch.
    _read_yes_no_as_booleans(recipe.model, fields)
    _check_model_types(recipe.model, fields, recipe.source)
    check_model_values(recipe.model, recipe.source)


_SIMPLE_TYPES: dict[str, Any] = {"int": int, "float": float, "bool": bool, "str": str, "None": None}


def _annotation_types(annotation: Any) -> tuple[str, set[Any]] | None:
    """``("int | None", {int, None})`` for a config field's annotation; None if it is not made of simple types."""
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    types_: set[Any] = set()
    for part in (p.strip() for p in text.split("|")):
        if part in _SIMPLE_TYPES:
            types_.add(_SIMPLE_TYPES[part])
        elif part.startswith(("list[", "dict[")):
            types_.add(list if part.startswith("list") else dict)
        else:
            return None  # Literal[...], torch.dtype, ...: left to the config class
    return text, types_


def _check_model_types(model: dict[str, Any], fields: dict[str, dict[str, Any]], source: str) -> None:
    """Check each ``model:`` value against its config field's annotation (int, float, bool, str, list, None),
    so ``hidden_size: [8]`` or ``bidirectional: maybe`` is a one-line error naming the key, not a traceback
    from inside torch. `fields` is `model_fields` by name (the annotation text is its ``type``)."""
    annotations = {name: f["type"] for name, f in fields.items() if f.get("type")}
    for key, value in model.items():
        parsed = _annotation_types(annotations[key]) if key in annotations and key != "type" else None
        if parsed is None:
            continue
        text, allowed = parsed
        if value is None:
            ok = None in allowed
        elif isinstance(value, bool):
            ok = bool in allowed
        elif isinstance(value, int):
            ok = int in allowed or float in allowed
        elif isinstance(value, (float, str, list, dict)):
            ok = type(value) in allowed
        else:
            ok = False
        if not ok:
            raise NlpipeError(
                f"{source}: key 'model.{key}': expected {text}, got {shorten(value)} ({type(value).__name__})"
            )


def _read_yes_no_as_booleans(model: dict[str, Any], fields: dict[str, dict[str, Any]]) -> None:
    """Turn YAML 1.1's yes/no/on/off (read as strings by `nlpipe.recipe.RecipeLoader`) into booleans for the
    config's boolean settings, as the recipe sections do (``bidirectional: no``)."""
    from .recipe import _YAML11_BOOLEANS

    for key, value in model.items():
        field = fields.get(key, {})
        is_bool = isinstance(field.get("default"), bool) or str(field.get("type", "")).split("|")[0].strip() == "bool"
        if is_bool and isinstance(value, str) and value.lower() in _YAML11_BOOLEANS:
            model[key] = _YAML11_BOOLEANS[value.lower()]


def build_config(model_type: str, settings: dict[str, Any], **task_values: Any) -> Any:
    """Make the config: registry defaults < recipe settings < values only the task knows (vocab, labels)."""
    entry = get_entry(model_type)
    config_class = _import(entry.config_class)
    values = dict(entry.defaults)
    values.update({k: v for k, v in settings.items() if k not in ("type", "init_from")})
    values.update(task_values)
    try:
        return config_class(**values)
    except (ValueError, TypeError) as exc:
        raise NlpipeError(f"model '{model_type}': invalid settings: {str(exc).strip().splitlines()[-1]}") from exc


def build_model(model_type: str, settings: dict[str, Any], *, auto_class: str | None = None,
                **task_values: Any) -> Any:
    """Build a freshly initialised model from the registry through its Auto class.

    With ``settings["init_from"]`` the body comes from that pretrained model instead and only the
    task's head is fresh (`nlpipe.init_from.build_model_from_pretrained`). `auto_class` replaces the
    registry's Auto class where a model type serves several tasks (``AutoModelForMaskedLM`` for bert).
    """
    import transformers

    if settings.get("init_from"):
        from .init_from import build_model_from_pretrained

        entry = get_entry(model_type)
        return build_model_from_pretrained(model_type, auto_class or entry.auto_class, _import(entry.config_class),
                                           settings, task_values)
    config = build_config(model_type, settings, **task_values)
    auto = getattr(transformers, auto_class or get_entry(model_type).auto_class)
    return auto.from_config(config)


if __name__ == "__main__":
    write_field_index()
    print(f"wrote {FIELD_INDEX}")
