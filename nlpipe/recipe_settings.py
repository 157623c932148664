"""Every setting of a recipe with its resolved value, type, default and meaning (`recipes show --all`).

Generated from the classes the validator builds recipes with — the dataclasses in ``recipe.py`` and
``tokenizer_training.TokenizerSpec`` (their attribute docstrings are the meanings) and the model
registry's field index for ``model.*`` — so the listing cannot drift from what validation accepts.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import re
import textwrap
from dataclasses import dataclass
from typing import Any

import yaml

from .recipe import Recipe


@dataclass
class Setting:
    """One recipe key."""

    key: str
    value: Any
    type: str
    default: Any
    doc: str
    required: bool = False


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass (the string literal right below each field), by field name."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):  # no source (frozen app): meanings are missing, keys and types are not
        return {}
    docs: dict[str, str] = {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for node, after in zip(body, body[1:], strict=False):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = after.value.value
    return docs


def one_line(doc: str) -> str:
    """The first sentence of a docstring, on one line ("et al. 2016" does not end it)."""
    return re.split(r"(?<=\.)\s+(?=[A-Z`(])", " ".join(doc.split()), maxsplit=1)[0]


def _default(f: dataclasses.Field) -> tuple[Any, bool]:
    if f.default is not dataclasses.MISSING:
        return f.default, False
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory(), False
    return None, True


def _dataclass_settings(cls: type, obj: Any, prefix: str, skip: tuple[str, ...] = ()) -> list[Setting]:
    docs = field_docs(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):  # a nested section (train.budget): one row per key inside it
            out += _dataclass_settings(type(value), value, f"{prefix}{f.name}.")
            continue
        default, required = _default(f)
        out.append(Setting(f"{prefix}{f.name}", value, str(f.type), default,
                           one_line(docs.get(f.name, "")), required))
    return out


def recipe_settings(recipe: Recipe) -> list[Setting]:
    """Every key a recipe may set, in recipe order, with the value this recipe resolves it to."""
    from .init_from import REUSE_TOKENIZER
    from .model_registry import MODELS, model_fields
    from .tokenizer_training import TokenizerSpec, load_spec

    docs = field_docs(Recipe)
    out: list[Setting] = []
    for f in dataclasses.fields(Recipe):
        if f.name == "source":
            continue
        value = getattr(recipe, f.name)
        if dataclasses.is_dataclass(value):
            out += _dataclass_settings(type(value), value, f"{f.name}.")
        elif f.name == "model":
            out.append(Setting("model.type", value["type"], "str", None,
                               f"Registry model: {', '.join(MODELS)}.", required=True))
            for mf in model_fields(value["type"]):
                out.append(Setting(f"model.{mf['name']}", value.get(mf["name"], mf["default"]), mf["type"],
                                   mf["default"], one_line(mf["doc"])))
        elif f.name == "tokenizer" and value.get("spec") == REUSE_TOKENIZER:
            out.append(Setting("tokenizer.spec", value["spec"], "str", None,
                               "init_from: the tokenizer of the model.init_from source (no spec of its own).",
                               required=True))
        elif f.name == "tokenizer":
            overrides = {k: v for k, v in value.items() if k != "spec"}
            spec = load_spec(value["spec"], overrides, recipe.source)
            out.append(Setting("tokenizer.spec", value["spec"], "str", None,
                               "Tokenizer spec: a file name in tokenizers/ (its fields below can be overridden).",
                               required=True))
            out += _dataclass_settings(TokenizerSpec, spec, "tokenizer.", skip=("name",))
        elif f.name == "generate":
            if not value:
                out.append(Setting("generate", {}, str(f.type), {}, one_line(docs.get(f.name, ""))))
            for key, item in value.items():
                out.append(Setting(f"generate.{key}", item, type(item).__name__, None,
                                   "Generation setting (any transformers GenerationConfig field)."))
        else:
            default, required = _default(f)
            out.append(Setting(f.name, value, str(f.type), default, one_line(docs.get(f.name, "")), required))
    return out


def _show(value: Any) -> str:
    if isinstance(value, str) and value and "\n" not in value and len(value) <= 40:
        return value
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    if text.endswith("\n..."):
        text = text[:-4].strip()
    return text if len(text) <= 40 else text[:37] + "..."


def format_settings(settings: list[Setting]) -> str:
    """Aligned text: key, value, type, default, meaning — one line per key."""
    rows = [("KEY", "VALUE", "TYPE", "DEFAULT", "MEANING")]
    for s in settings:
        kind = s.type if len(s.type) <= 32 else s.type[:29] + "..."
        rows.append((s.key, _show(s.value), kind, "(required)" if s.required else _show(s.default), s.doc))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
                     for r in rows)
