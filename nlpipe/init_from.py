"""``model.init_from: RUN_DIR | HUB_ID``: start a recipe's model from a pretrained body.

Pretraining then fine-tuning, the way BERT and GPT are meant to be used:

- the **source** is a local folder (an nlpipe run folder, e.g. a ``pretrain-bert`` run, or any
  folder written by ``save_pretrained``) or a Hugging Face Hub model id (``bert-base-cased``),
  fetched through the Hub cache (so ``HF_HUB_OFFLINE=1`` works once it is cached); only
  ``*.safetensors`` weights are read, nothing is unpickled and no remote code runs;
- the **architecture** is the source's config (the recipe's ``model:`` keys other than ``type`` and
  ``init_from`` may change settings such as dropout; keys that change a weight's shape are an error);
- the **body** (transformers' ``base_model``: ``bert``, ``transformer``, ``model``) is loaded
  exactly; the task's **head** (classifier, LM head on top of a different pretraining head) is
  freshly initialised from the run's seed;
- the **tokenizer** is the source's own; a recipe must either say ``tokenizer: {spec: init_from}`` (other
  tokenizer keys are then moot) or repeat the source run's tokenizer section, anything else is an error (a different vocabulary
  would make the pretrained embeddings meaningless).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .errors import NlpipeError

REUSE_TOKENIZER = "init_from"
"""``tokenizer.spec`` value meaning "the init_from source's tokenizer"."""
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# Config values the source fixes: they size weights, and the same tokenizer needs no change.
_SIZED_BY_SOURCE = ("vocab_size", "decoder_vocab_size", "max_position_embeddings", "n_positions")
_HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "recipe.yaml"]


def init_source(recipe: Any) -> str | None:
    """The recipe's ``model.init_from`` (None when the model starts from scratch)."""
    value = recipe.model.get("init_from")
    return str(value) if value not in (None, "") else None


def resolve_init_folder(value: str, source: str = "recipe") -> Path:
    """The local folder holding ``model.init_from``: the folder itself, or the Hub snapshot in the cache.

    Raises:
        NlpipeError: neither a folder nor a Hub id; the Hub model cannot be fetched (offline and not
            cached, unknown id, no network); the folder lacks a config or safetensors weights.
    """
    path = Path(value).expanduser()
    where = f"{source}: key 'model.init_from'"
    if path.is_dir():
        folder = path
    elif _HUB_ID.fullmatch(value) and not path.exists():
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(value, allow_patterns=_HUB_FILES))
        except Exception as exc:  # noqa: BLE001 - every Hub failure becomes one line for the user
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise NlpipeError(
                f"{where}: cannot get '{value}' from the Hugging Face Hub ({type(exc).__name__}: {reason}); "
                "check the model id, go online once to fill the cache (HF_HUB_OFFLINE=1 then works), "
                "or give a local folder"
            ) from exc
    else:
        raise NlpipeError(f"{where}: '{value}' is neither a folder nor a Hub model id; give a run folder "
                          "(e.g. runs/pretrain-bert) or an id such as bert-base-cased")
    if not (folder / "config.json").is_file():
        raise NlpipeError(f"{where}: {folder} has no config.json; give a run folder or a save_pretrained folder")
    if not any(folder.glob("*.safetensors")):
        raise NlpipeError(f"{where}: {folder} has no *.safetensors weights (nlpipe does not load pickled "
                          "weights); convert them with save_pretrained(safe_serialization=True)")
    return folder


def _source_tokenizer_section(folder: Path) -> dict[str, Any] | None:
    """The ``tokenizer:`` section of the recipe that trained `folder` (None for a non-nlpipe folder)."""
    import yaml

    recipe_file = folder / "recipe.yaml"
    if not recipe_file.is_file():
        return None
    try:
        raw = yaml.safe_load(recipe_file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        return None
    section = raw.get("tokenizer") if isinstance(raw, dict) else None
    return section if isinstance(section, dict) else None


def load_init_tokenizer(recipe: Any, folder: Path) -> Any:
    """The source's tokenizer, after checking the recipe asks for it (see the module docstring).

    Raises:
        NlpipeError: the recipe names another tokenizer, or the folder has none.
    """
    from transformers import AutoTokenizer

    theirs = _source_tokenizer_section(folder)
    ours = dict(recipe.tokenizer)
    # spec=init_from reuses it whatever else the section says (a spec's options no longer apply).
    if ours.get("spec") != REUSE_TOKENIZER and ours != theirs:
        described = f"the one its recipe names ({theirs})" if theirs else "its own"
        raise NlpipeError(
            f"{recipe.source}: key 'tokenizer': model.init_from={init_source(recipe)} brings its tokenizer, "
            f"but this recipe asks for {ours}; set tokenizer.spec={REUSE_TOKENIZER} to reuse it "
            f"(a different vocabulary would not match the pretrained embeddings; the source uses {described})"
        )
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise NlpipeError(f"{recipe.source}: key 'model.init_from': {folder} has no usable tokenizer ({exc}); "
                          "give the folder of a finished run or a Hub model with its tokenizer") from exc


def build_model_from_pretrained(
    model_type: str, auto_class: str, config_class: type, settings: dict[str, Any], task_values: dict[str, Any],
    source: str = "recipe",
) -> Any:
    """The task model with its body loaded from ``settings["init_from"]`` and a fresh head.

    Args:
        model_type: the recipe's ``model.type`` (the registry name).
        auto_class: the transformers Auto class of the task model (``AutoModelForTokenClassification``, ...).
        config_class: the registry's config class; the source's config must be one.
        settings: the recipe's ``model:`` keys (``init_from`` and overrides such as dropout).
        task_values: config values the task knows (labels, special token ids, vocabulary size).

    Raises:
        NlpipeError: the source holds another kind of model, has no separate body, or its weights do
            not fit (a recipe key that changes a weight's shape is named).
    """
    import transformers

    import nlpipe  # noqa: F401  (our Auto registrations, for nlpipe sources)

    where = f"{source}: key 'model.init_from'"
    folder = resolve_init_folder(str(settings["init_from"]), source)
    config = transformers.AutoConfig.from_pretrained(str(folder))
    if not isinstance(config, config_class):
        raise NlpipeError(f"{where}: {folder} holds a '{config.model_type}' model but model.type is "
                          f"'{model_type}' ({config_class.__name__}); use a source of the same kind")
    overrides = {k: v for k, v in settings.items() if k not in ("type", "init_from")}
    # Whole numbers in a config are sizes and counts: the pretrained weights fix them.
    conflicts = [f"model.{k}={v} (pretrained: {getattr(config, k)})" for k, v in sorted(overrides.items())
                 if isinstance(v, int) and not isinstance(v, bool) and getattr(config, k, v) != v]
    if conflicts:
        raise NlpipeError(f"{where}: the pretrained model defines the architecture, but the recipe sets "
                          f"{', '.join(conflicts)}; remove these keys (recipe ner-bert-pretrained has none)")
    for key, value in task_values.items():
        if key in _SIZED_BY_SOURCE and getattr(config, key, None) is not None:
            if value is not None and value > getattr(config, key):
                raise NlpipeError(f"{where}: the task needs {key}={value}, the pretrained model has "
                                  f"{getattr(config, key)}; use the source's tokenizer (tokenizer.spec=init_from)")
            continue
        setattr(config, key, value)
    for key, value in overrides.items():  # dropout and other settings that size no weight
        setattr(config, key, value)
    if "id2label" in task_values:  # keep num_labels consistent with the new label set
        config.num_labels = len(task_values["id2label"])
    model = getattr(transformers, auto_class).from_config(config)  # fresh everything, from the seed
    target = model.base_model
    if target is model:
        raise NlpipeError(f"{where}: '{model_type}' models have no separate pretrained body to load; init_from "
                          "works for Transformer models (bert, gpt2, marian)")
    try:
        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()  # its report of the pretraining head left out is noise:
        try:  # what the task model needs is checked below
            body, info = transformers.AutoModel.from_pretrained(str(folder), use_safetensors=True,
                                                                output_loading_info=True)
        finally:
            transformers.logging.set_verbosity(verbosity)
        wanted = target.state_dict()
        absent = sorted(k for k in info.get("missing_keys", []) if k in wanted)
        if absent:
            raise NlpipeError(f"{where}: {folder} has no pretrained weights for {', '.join(absent[:3])}")
        missing, _unused = target.load_state_dict(  # _unused: e.g. BertModel's pooler, not in a tagger
            {k: v for k, v in body.state_dict().items() if k in wanted}, strict=False
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise NlpipeError(f"{where}: cannot load the pretrained body from {folder}: "
                          f"{str(exc).strip().splitlines()[0]}") from exc
    if missing:
        raise NlpipeError(f"{where}: the pretrained body has no weights for {', '.join(missing[:3])}")
    return model
