"""Recipes: one YAML file per task × model, parsed into typed, validated objects.

A recipe is data; `nlpipe.run.run_recipe` is the code that runs it. Every problem in a recipe is an
`NlpipeError` naming the file and the key (``recipes/ner-bilstm.yaml: key 'train.lr': ...``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import NlpipeError
from .package_data import package_data_dir
from .run_folder import check_run_name

TASKS = ("token-classification", "translation", "summarization", "causal-lm", "masked-lm")


@dataclass
class DataSection:
    """Where the examples come from."""

    dataset: str
    """Catalog name (``conll2003``, ``multi30k``, ``samsum``, ``ptb``, ``wikitext2``); see `nlpipe.data.catalog`."""
    max_train_examples: int | None = None
    """Use only the first N training examples (quick experiments)."""
    max_eval_examples: int | None = None
    """Use only the first N validation/test examples."""
    max_length: int = 256
    """Truncate inputs (source side for seq2seq) to this many tokens."""
    max_target_length: int = 128
    """Truncate seq2seq targets to this many tokens."""
    extra_datasets: list[str] = field(default_factory=list)
    """masked-lm / causal-lm: more catalog data sets whose *training* split is added as unlabelled text."""
    text_files: list[str] = field(default_factory=list)
    """masked-lm / causal-lm: local text files (one text per line, gzip allowed; relative paths looked up in --data-dir first)."""


@dataclass
class BudgetSection:
    """``train.budget``: how much training a run gets, set with exactly one key (or none).

    The budget is resolved to optimizer steps before the learning-rate schedule is built, so warm-up
    and decay end when the budget does; it replaces ``max_epochs``, while ``max_steps`` and
    ``max_train_minutes`` still stop a run early (see `nlpipe.training.budget`)."""

    steps: int | None = None
    """Optimizer steps."""
    tokens: float | None = None
    """Training tokens seen (all processes), as the task counts them; machine-independent."""
    minutes: float | None = None
    """Wall time of training (evaluations included); steps planned from the measured speed."""


@dataclass
class TrainSection:
    """How to train: one Accelerate loop for every task."""

    max_epochs: int = 10
    """Passes over the training data (training may stop earlier: max_steps, max_train_minutes, early stopping)."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (overrides max_epochs when reached first)."""
    max_train_minutes: float | None = None
    """Stop training after this many minutes of wall time (then evaluate the best checkpoint)."""
    batch_size: int = 32
    """Examples per batch per process (before gradient accumulation)."""
    batch_tokens: int | None = None
    """If set, batches hold up to this many tokens instead of a fixed number of examples."""
    gradient_accumulation_steps: int = 1
    """Batches whose gradients are summed before each optimizer step."""
    optimizer: str = "adam"
    """adam | adamw | sgd"""
    learning_rate: float = 1e-3
    """Peak learning rate of the optimizer."""
    momentum: float = 0.0
    """SGD momentum."""
    weight_decay: float = 0.0
    """Weight decay (L2 for adam/sgd, decoupled for adamw)."""
    lr_scheduler: str = "constant"
    """Any `transformers.get_scheduler` name: constant, linear, cosine, inverse_sqrt, ..."""
    warmup_steps: int = 0
    """Steps of linear learning-rate warm-up at the start."""
    max_grad_norm: float | None = 5.0
    """Clip the gradient norm to this value (null: no clipping)."""
    mixed_precision: str = "no"
    """no | bf16 | fp16 | auto. bf16 autocast is fast on GPUs and on CPUs with AMX bf16 units (Xeon
    Sapphire Rapids and later: matmuls ~8x faster); on AVX2-only CPUs it is far slower and nn.LSTM may
    fail (HF5 notes). ``auto`` picks bf16 where it is fast and no elsewhere. Final scores are always
    computed in full precision."""
    eval_every_steps: int | None = None
    """Evaluate on the validation split every N optimizer steps (default: at the end of each epoch)."""
    early_stopping_patience: int | None = None
    """Stop after this many evaluations without improvement of the selection metric."""
    seed: int = 42
    """Seed of initialisation, shuffling and dropout (runs are reproducible per seed)."""
    bucket_by_length: bool = True
    """Group examples of similar length in a batch so RNNs compute little on padding."""
    log_every_steps: int = 50
    """Write a training-log line (loss, learning rate, tokens/s) every N steps."""
    checkpoint_every_steps: int | None = None
    """Write a resumable checkpoint every N steps (always also at each evaluation)."""
    bptt_length: int = 35
    """Causal LM on a stream: truncated back-propagation length."""
    deterministic: bool = False
    """Use only deterministic kernels (torch.use_deterministic_algorithms): needed for bit-identical runs
    on GPUs (atomics in scatter/index backward, cuBLAS); CPU runs are reproducible without it."""
    budget: BudgetSection = field(default_factory=BudgetSection)
    """steps | tokens | minutes: the training length, with the schedule sized to end there."""
    teacher: str | None = None
    """token-classification: a finished tagger run (e.g. a fine-tuned BERT) to distil from: the student also
    learns the teacher's per-word label distribution on the training text (docs/leaderboards.md)."""
    distill_alpha: float = 0.5
    """With train.teacher: weight of the KL term; the gold-tag loss gets 1 - alpha."""
    distill_temperature: float = 2.0
    """With train.teacher: softmax temperature of teacher and student in the KL term (scaled by T squared)."""


@dataclass
class EvalSection:
    """How to evaluate and select the best checkpoint."""

    metric: str = "f1"
    """Selection metric, a key of the task's metric dict (f1, sacrebleu, rougeL, perplexity, ...)."""
    greater_is_better: bool = True
    """Whether a higher selection metric is better (false for perplexity)."""
    batch_size: int = 64
    """Examples per batch when evaluating."""
    splits: list[str] = field(default_factory=lambda: ["validation", "test"])
    """Splits evaluated with the best model at the end of the run."""


@dataclass
class HubSection:
    """Where `push_to_hub` sends the run folder."""

    repo_id: str | None = None
    """Hub repository id (your-name/model-name) for push_to_hub."""
    private: bool = False
    """Create the Hub repository private (new repositories only)."""
    revision: str | None = None
    """Hub branch to push to (created if missing)."""
    commit_message: str = "Upload model trained with nlpipe"
    """Commit message of the Hub upload."""


@dataclass
class Recipe:
    """A whole recipe. `model`, `tokenizer` and `generate` are validated by the task and model registry."""

    name: str
    """Recipe name; the default run folder is runs/NAME."""
    task: str
    """token-classification | translation | summarization | causal-lm"""
    data: DataSection
    model: dict[str, Any]
    """``type`` (a registry name: rnn_tagger, bert, rnn_seq2seq, marian, rnn_lm, gpt2) + config fields."""
    tokenizer: dict[str, Any]
    """``spec`` (a file in tokenizers/) + overrides of that spec's fields."""
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    generate: dict[str, Any] = field(default_factory=dict)
    """Generation settings for seq2seq / LM evaluation (num_beams, max_new_tokens, ...)."""
    description: str = ""
    """One line on what the recipe trains (shown by `nlpipe recipes list`)."""
    push_to_hub: bool = False
    """Push the run folder to the Hub (settings under hub) when the run finishes."""
    hub: HubSection = field(default_factory=HubSection)
    source: str = field(default="<memory>", compare=False)
    """Where the recipe was read from (not a YAML key)."""

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain data (what is written to a run folder's recipe.yaml)."""
        out = dataclasses.asdict(self)
        out.pop("source")
        return out


# --------------------------------------------------------------------------- locating recipes


def packaged_recipe_dir() -> Path:
    """The recipes shipped inside the installed package (``recipes/`` in a checkout)."""
    return package_data_dir("recipes", "recipes")


def list_recipes() -> dict[str, Path]:
    """Recipe name → file, packaged recipes overlaid by ``./recipes/`` in the current directory."""
    found: dict[str, Path] = {}
    for folder in (packaged_recipe_dir(), Path("recipes")):
        if folder.is_dir():
            for path in sorted(folder.glob("*.yaml")):
                found[path.stem] = path
    return dict(sorted(found.items()))


def resolve_recipe_path(name_or_path: str) -> Path:
    """Resolve a recipe: an explicit path, then ``./recipes/NAME.yaml``, then the packaged copy.

    Raises:
        NlpipeError: when nothing matches; the message lists the known recipes.
    """
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.parent != Path("."):
        if candidate.is_file():
            return candidate
        raise NlpipeError(f"{name_or_path}: recipe file not found; give an existing path or a recipe name")
    for folder in (Path("recipes"), packaged_recipe_dir()):
        path = folder / f"{name_or_path}.yaml"
        if path.is_file():
            return path
    known = ", ".join(list_recipes()) or "(none)"
    raise NlpipeError(f"unknown recipe '{name_or_path}'; known recipes: {known} (or give a path to a .yaml file)")


# --------------------------------------------------------------------------- parsing + validation


def apply_overrides(raw: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML scalars) to a raw recipe dict."""
    for item in overrides:
        if "=" not in item:
            raise NlpipeError(f"override '{item}': expected key.sub=value, e.g. train.max_epochs=3")
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text) if text != "" else ""
        except yaml.YAMLError:
            value = text
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part, {}), dict):
                raise NlpipeError(f"override '{item}': '{part}' is not a section in {source}")
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return raw


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _check_value(value: Any, tp: Any, where: str) -> Any:
    """Check (and gently coerce: int → float, '1e-3' → float) a YAML value against a type hint."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_value(value, option, where)
            except NlpipeError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is list:
        if not isinstance(value, list):
            raise NlpipeError(f"{where}: expected a list, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_check_value(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise NlpipeError(f"{where}: expected a mapping, got {value!r}")
        return value
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads "1e-3" as a string
            except ValueError:
                pass
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(value, tp):
        return value
    raise NlpipeError(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _build(cls: type, raw: Any, source: str, prefix: str) -> Any:
    """Build a section dataclass from raw YAML, rejecting unknown keys and missing required ones."""
    label = prefix.rstrip(".") or "(top level)"
    if not isinstance(raw, dict):
        raise NlpipeError(f"{source}: key '{label}': expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise NlpipeError(
            f"{source}: unknown key '{prefix}{unknown[0]}'; valid keys here: {', '.join(fields)}"
        )
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}{name}"
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if name not in raw:
            if required:
                raise NlpipeError(f"{source}: missing required key '{key}'")
            continue
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, raw[name], source, f"{key}.")
        else:
            kwargs[name] = _check_value(raw[name], tp, f"{source}: key '{key}'")
    return cls(**kwargs)


def parse_recipe(raw: Any, source: str = "<memory>") -> Recipe:
    """Validate raw recipe data (a dict from YAML) and return a `Recipe`.

    Raises:
        NlpipeError: unknown key, wrong type, missing required field, unknown task — naming the key.
    """
    if isinstance(raw, dict) and isinstance(raw.get("tokenizer"), str):
        raw = {**raw, "tokenizer": {"spec": raw["tokenizer"]}}
    recipe = _build(Recipe, raw, source, "")
    recipe.source = source
    check_run_name(recipe.name, source)
    if recipe.task not in TASKS:
        raise NlpipeError(f"{source}: key 'task': unknown task '{recipe.task}'; choose one of {', '.join(TASKS)}")
    if "type" not in recipe.model:
        raise NlpipeError(f"{source}: missing required key 'model.type' (e.g. rnn_tagger, bert, rnn_seq2seq)")
    if "spec" not in recipe.tokenizer:
        raise NlpipeError(f"{source}: missing required key 'tokenizer.spec' (a file name in tokenizers/)")
    if recipe.train.mixed_precision not in ("no", "bf16", "fp16", "auto"):
        raise NlpipeError(f"{source}: key 'train.mixed_precision': choose no, bf16, fp16 or auto")
    if recipe.train.optimizer not in ("adam", "adamw", "sgd"):
        raise NlpipeError(f"{source}: key 'train.optimizer': choose adam, adamw or sgd")
    if recipe.task not in ("masked-lm", "causal-lm"):
        for key in ("extra_datasets", "text_files"):
            if getattr(recipe.data, key):
                raise NlpipeError(f"{source}: key 'data.{key}': only tasks masked-lm and causal-lm read unlabelled "
                                  "text; remove it")
    if recipe.train.teacher and recipe.task != "token-classification":
        raise NlpipeError(f"{source}: key 'train.teacher': only token-classification recipes distil from a "
                          "teacher; remove it")
    if not 0 <= recipe.train.distill_alpha <= 1 or not recipe.train.distill_temperature > 0:
        raise NlpipeError(f"{source}: key 'train.distill_alpha' must be in [0, 1] and 'train.distill_temperature' "
                          "> 0")
    from .training.budget import check_budget

    check_budget(recipe.train, source)
    return recipe


def read_yaml(path: Path) -> Any:
    """Read a YAML file; malformed YAML is an NlpipeError naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise NlpipeError(f"{path}: file not found") from exc
    except UnicodeDecodeError as exc:
        raise NlpipeError(f"{path}: not valid UTF-8; save the file as UTF-8") from exc
    return parse_yaml(text, str(path))


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML text; malformed YAML is an NlpipeError naming the source and line."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise NlpipeError(f"{source}{line}: malformed YAML ({problem}); fix the syntax at that line") from exc


def load_recipe(name_or_path: str, overrides: list[str] | None = None) -> Recipe:
    """Resolve, read, apply overrides to and validate a recipe. See `resolve_recipe_path`."""
    path = resolve_recipe_path(name_or_path)
    return recipe_from_yaml(read_yaml(path), str(path), overrides)


def recipe_from_yaml(raw: Any, source: str, overrides: list[str] | None = None) -> Recipe:
    """Validate parsed recipe YAML from any source (a file, ``-`` for stdin), overrides applied."""
    path = source
    if raw is None:
        raise NlpipeError(f"{path}: the recipe is empty")
    if not isinstance(raw, dict):
        raise NlpipeError(f"{path}: a recipe must be a mapping of keys (name, task, data, model, ...)")
    raw = apply_overrides(raw, overrides or [], str(path))
    recipe = parse_recipe(raw, str(path))
    from .model_registry import validate_model_section  # late: registry imports transformers

    validate_model_section(recipe)
    return recipe


def dump_recipe(recipe: Recipe, path: Path) -> None:
    """Write the resolved recipe (overrides applied) as YAML, first line the command that reruns it."""
    header = f"# nlpipe run recipe {path.name}\n# resolved from {recipe.source}\n"
    path.write_text(header + yaml.safe_dump(recipe.to_dict(), sort_keys=False), encoding="utf-8")
