"""Recipes: one YAML file per task × model, parsed into typed, validated objects.

A recipe is data; `nlpipe.run.run_recipe` is the code that runs it. Every problem in a recipe is an
`NlpipeError` naming the file and the key (``recipes/ner-bilstm.yaml: key 'train.lr': ...``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import NlpipeError, shorten
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
    ``max_train_minutes`` still stop a run early (see `nlpipe.training.budget`). A budget or
    ``max_epochs`` given over the recipe (sample settings, overrides) replaces the recipe's budget
    (`apply_layer`)."""

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
    """Passes over the training data (training may stop earlier: max_steps, max_train_minutes, early stopping);
    0 trains nothing and only evaluates the initial model (e.g. one loaded with ``model.init_from``)."""
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
    label_smoothing: float = 0.0
    """translation / summarization: share of each target token's probability spread evenly over the
    vocabulary in the training loss (0.1 in Vaswani et al. 2017); evaluation scores are unaffected."""
    average_checkpoints: int = 0
    """When training ends, average the weights of the models at the last N validations (Vaswani et al. 2017
    averaged the last 5-20 checkpoints) and keep the average if it scores at least as well on validation as
    the best single model. 0 or 1: off. Costs one weight file per validation on disk and one extra validation."""
    average_checkpoints_until: str = "last"
    """last | best: the N validations averaged end at the last one, or at the best one (with the N-1 before it)
    for runs that peak before their schedule ends: averaging around the peak instead of over the plateau
    after it. ``best`` keeps up to 2N-1 weight files on disk."""
    mixed_precision: str = "no"
    """no | bf16 | fp16 | auto. bf16 autocast is fast on GPUs and on CPUs that multiply bf16 in hardware:
    AMX tiles (Xeon Sapphire Rapids and later: matmuls ~8x faster) or AVX-512 BF16 (AMD Zen 4 and later:
    matmuls ~2.4x, whole training steps 1.5-1.8x); on AVX2-only CPUs it is far slower and nn.LSTM may
    fail (HF5 notes). ``auto`` picks bf16 where it is fast and no elsewhere. Final scores are always
    computed in full precision."""
    eval_every_steps: int | None = None
    """Evaluate on the validation split every N optimizer steps (default, or 0: at the end of each epoch).
    The weights at the last step are always validated too, so steps after the last multiple of N count."""
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
    sample: dict[str, Any] = field(default_factory=dict)
    """Settings used only on the built-in sample data (``--data sample``): ``key.sub: value`` pairs, like
    command-line overrides, that turn the real-data schedule into a quick smoke run. Overrides given by the
    user still win."""
    source: str = field(default="<memory>", compare=False)
    """Where the recipe was read from (not a YAML key)."""
    sample_applied: list[str] = field(default_factory=list, compare=False)
    """The ``sample`` settings applied to this recipe (not a YAML key; empty unless run on sample data)."""

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain data (what is written to a run folder's recipe.yaml)."""
        out = dataclasses.asdict(self)
        out.pop("source")
        out.pop("sample_applied")
        return out


# --------------------------------------------------------------------------- value ranges

MAX_COUNT = 2**31 - 1
"""Largest count/size accepted anywhere (beyond it torch, numpy and the Rust tokenizers overflow)."""
MAX_SEED = 2**32 - 1
"""numpy's ``np.random.seed`` (called by accelerate's ``set_seed``) takes seeds in [0, 2**32 - 1]."""


@dataclass(frozen=True)
class Limit:
    """The allowed range of a numeric setting; every number must also be finite (no nan/inf)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    """True: the value must be > low (else >= low)."""
    high_open: bool = False
    """True: the value must be < high (else <= high)."""

    def describe(self) -> str:
        """The range in words: ``in [1, 2147483647]``, ``in [0, 1)``, ``> 0 (finite)``."""

        def num(x: float) -> str:
            return str(int(x)) if float(x).is_integer() else f"{x:g}"

        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"in {left}{num(self.low)}, {num(self.high)}{right}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {num(self.low)} (finite)"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {num(self.high)} (finite)"
        return "that is a finite number"

    def allows(self, value: float) -> bool:
        """Whether ``value`` is finite and in the range."""
        try:
            if not math.isfinite(value):
                return False
        except OverflowError:  # an int beyond any float: settings are turned into floats later
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def check(self, value: Any, where: str) -> None:
        """Raise an NlpipeError naming ``where`` (file and key), the value and the range if it is outside."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return  # types are checked elsewhere
        if not self.allows(value):
            raise NlpipeError(f"{where}: {shorten(value)} is out of range; use a value {self.describe()}")


COUNT = Limit(1, MAX_COUNT)
"""A count or size: an integer >= 1."""
OPTIONAL_COUNT = Limit(0, MAX_COUNT)
"""A count where 0 means none (warmup steps, n-gram sizes)."""
PROBABILITY = Limit(0, 1, high_open=True)
"""A dropout-like rate in [0, 1)."""
POSITIVE = Limit(0, low_open=True)
"""A finite number > 0 (learning rate, minutes, norms, epsilons)."""
NON_NEGATIVE = Limit(0)
"""A finite number >= 0."""
SEED = Limit(0, MAX_SEED)

FIELD_LIMITS: dict[str, dict[str, Limit]] = {
    "DataSection": {
        "max_train_examples": COUNT, "max_eval_examples": COUNT, "max_length": COUNT, "max_target_length": COUNT,
    },
    "TrainSection": {
        "max_epochs": OPTIONAL_COUNT, "max_steps": COUNT, "max_train_minutes": POSITIVE, "batch_size": COUNT,
        "batch_tokens": COUNT, "gradient_accumulation_steps": COUNT, "learning_rate": POSITIVE,
        "momentum": PROBABILITY, "weight_decay": NON_NEGATIVE, "warmup_steps": OPTIONAL_COUNT,
        "max_grad_norm": POSITIVE, "eval_every_steps": OPTIONAL_COUNT, "early_stopping_patience": COUNT, "seed": SEED,
        "log_every_steps": COUNT, "checkpoint_every_steps": COUNT, "bptt_length": COUNT,
        "distill_alpha": Limit(0, 1), "distill_temperature": POSITIVE, "label_smoothing": PROBABILITY,
        "average_checkpoints": OPTIONAL_COUNT,
    },
    "BudgetSection": {"steps": COUNT, "tokens": POSITIVE, "minutes": POSITIVE},
    "EvalSection": {"batch_size": COUNT},
    "TokenizerSpec": {"vocab_size": COUNT, "min_frequency": COUNT, "model_max_length": COUNT},
}
"""Section class name → field → allowed range, checked by `_build` for every numeric field.

Every ``int``/``float`` field of a section must have an entry (tests/test_recipe.py enforces it), so a
new setting cannot silently skip range checking.
"""

GENERATE_LIMITS: dict[str, Limit] = {
    "num_beams": COUNT, "validation_num_beams": COUNT, "max_new_tokens": COUNT, "min_new_tokens": OPTIONAL_COUNT,
    "max_length": COUNT, "min_length": OPTIONAL_COUNT, "no_repeat_ngram_size": OPTIONAL_COUNT,
    "top_k": COUNT, "top_p": Limit(0, 1, low_open=True), "temperature": POSITIVE, "length_penalty": Limit(),
    "repetition_penalty": POSITIVE, "num_return_sequences": COUNT, "eval_chunk_length": COUNT,
    "perplexity_window": COUNT, "perplexity_stride": COUNT,
}
"""Ranges of the ``generate:`` settings nlpipe and ``generate()`` read (other keys are the task's business)."""


def limit_for(cls: type, name: str) -> Limit:
    """The declared range of numeric field ``name`` of section ``cls`` (undeclared: any finite number)."""
    return FIELD_LIMITS.get(cls.__name__, {}).get(name, Limit())


def _is_numeric_hint(tp: Any) -> bool:
    """True for int, float and optional/union forms of them (the fields that need a range)."""
    if tp in (int, float):
        return True
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return any(_is_numeric_hint(t) for t in typing.get_args(tp))
    return False


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


# --------------------------------------------------------------------------- YAML

MAX_YAML_VALUES = 100_000
"""Most values (mapping entries, list items, scalars) a YAML document may expand to through its aliases.

A recipe has a few hundred; an alias bomb ("billion laughs") would have billions."""

_YAML11_BOOLEANS = {"yes": True, "no": False, "on": True, "off": False, "y": True, "n": False}
"""YAML 1.1 words that nlpipe reads as strings, and accepts for a boolean setting."""


class YamlDuplicateKey(yaml.YAMLError):
    """A key given twice in one mapping (PyYAML would silently keep the last)."""

    def __init__(self, key: Any, line: int, first_line: int) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key, self.line, self.first_line = key, line, first_line


class YamlTooLarge(yaml.YAMLError):
    """A document that expands (through aliases or merges) past `MAX_YAML_VALUES`."""


class RecipeLoader(yaml.SafeLoader):
    """PyYAML's safe loader with three changes for hand-written config files.

    - Booleans are YAML 1.2's ``true``/``false`` only: ``no``, ``yes``, ``on``, ``off`` stay strings
      (``mixed_precision: no`` is the string ``"no"``; boolean settings accept these words, see
      `_check_value`). Floats may omit the dot (``1e-3`` is a number, as in YAML 1.2).
    - A key repeated in one mapping is an error naming both lines (not a silent drop of the first).
    - ``<<`` merges may not expand a mapping past `MAX_YAML_VALUES` entries.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise YamlDuplicateKey(key, line, seen[key])
            seen[key] = line
        return super().construct_mapping(node, deep=deep)

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        super().flatten_mapping(node)
        if len(node.value) > MAX_YAML_VALUES:
            raise YamlTooLarge(f"'<<' merges expand a mapping to more than {MAX_YAML_VALUES:,} entries")


RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def _count_values(data: Any) -> int:
    """How many values ``data`` holds once its shared (aliased) parts are counted at each use.

    Raises:
        YamlTooLarge: more than `MAX_YAML_VALUES`, or a value that contains itself.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def count(value: Any) -> int:
        if not isinstance(value, (dict, list)):
            return 1
        ident = id(value)
        if ident in sizes:
            return sizes[ident]
        if ident in active:
            raise YamlTooLarge("a YAML alias refers to a value that contains it")
        active.add(ident)
        total = 1
        for item in (value.items() if isinstance(value, dict) else value):
            total += sum(count(v) for v in item) if isinstance(value, dict) else count(item)
            if total > MAX_YAML_VALUES:
                raise YamlTooLarge(f"YAML aliases expand to more than {MAX_YAML_VALUES:,} values (a recipe has hundreds)")
        active.discard(ident)
        sizes[ident] = total
        return total

    return count(data)


def _load_yaml(text: str) -> Any:
    data = yaml.load(text, Loader=RecipeLoader)  # noqa: S506 - RecipeLoader is a SafeLoader
    _count_values(data)
    return data


def load_yaml_text(text: str, where: str, *, with_line: bool = True) -> Any:
    """Parse YAML with `RecipeLoader`; every problem is one NlpipeError naming ``where`` (and the line).

    Raises:
        NlpipeError: malformed YAML, a duplicate key, an alias bomb or a self-referencing value, or
            nesting too deep to parse.
    """
    try:
        return _load_yaml(text)
    except YamlDuplicateKey as exc:
        raise NlpipeError(
            f"{where}{f':{exc.line}' if with_line else ''}: duplicate key {shorten(exc.key)} (first at line {exc.first_line}); "
            "give each key once (merge the two sections)"
        ) from None
    except YamlTooLarge as exc:
        raise NlpipeError(
            f"{where}: {exc}; write the values out instead of using anchors (&name) and aliases (*name)"
        ) from None
    except RecursionError:
        raise NlpipeError(f"{where}: the YAML is nested too deeply to read; a recipe needs a few levels") from None
    except (ValueError, OverflowError) as exc:  # PyYAML's constructors: a 5000-digit int, a date like 2024-13-45
        raise NlpipeError(
            f"{where}: a value cannot be read ({shorten(str(exc), 100, quote=False)}); quote it to keep it as text"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None and with_line else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise NlpipeError(
            f"{where}{line}: malformed YAML ({shorten(problem, 120, quote=False)}); fix the syntax at that line"
        ) from None


# --------------------------------------------------------------------------- parsing + validation


def apply_overrides(raw: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML scalars) to a raw recipe dict."""
    for item in overrides:
        if "=" not in item:
            raise NlpipeError(f"override {shorten(item)}: expected key.sub=value, e.g. train.max_epochs=3")
        key, text = item.split("=", 1)
        try:
            value = _load_yaml(text) if text != "" else ""
        except (YamlDuplicateKey, YamlTooLarge, RecursionError, ValueError, OverflowError):
            load_yaml_text(text, f"override {shorten(item)}", with_line=False)  # raises the one-line error
        except yaml.YAMLError:
            value = text  # not YAML (e.g. "a: b"): the plain text
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part, {}), dict):
                raise NlpipeError(f"override {shorten(item)}: {shorten(part)} is not a section in {source}")
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return raw


def apply_layer(base: dict[str, Any], layer: list[str], source: str) -> dict[str, Any]:
    """A copy of `base` with the ``key.sub=value`` items of `layer` applied; a length of training the
    layer sets (a budget of any kind, or ``train.max_epochs``) replaces the budget kinds below it.

    A recipe may be sized by a budget (minutes on the CPU its figures came from) and be run shorter
    (``train.max_epochs=2``) or compared under another budget (``nlpipe compare ...
    train.budget.tokens=2e6``): the length given last is the run's, as for any other setting. Two
    budget kinds set in one layer stay the error `check_budget` names.
    """
    raw = apply_overrides(copy.deepcopy(base), layer, source)
    train = raw.get("train")
    budget = train.get("budget") if isinstance(train, dict) else None
    if not isinstance(budget, dict):
        return raw
    keys = {item.partition("=")[0].strip() for item in layer}
    kinds = [f.name for f in dataclasses.fields(BudgetSection)]
    sets_length = ("train.max_epochs" in keys and train.get("max_epochs") is not None) or any(
        f"train.budget.{kind}" in keys and budget.get(kind) is not None for kind in kinds)
    if sets_length:
        for kind in kinds:
            if kind in budget and f"train.budget.{kind}" not in keys:
                budget[kind] = None
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
            raise NlpipeError(f"{where}: expected a list, got {shorten(value)}")
        (item_tp,) = typing.get_args(tp)
        return [_check_value(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise NlpipeError(f"{where}: expected a mapping, got {shorten(value)}")
        return value
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _YAML11_BOOLEANS:
            return _YAML11_BOOLEANS[value.lower()]  # YAML 1.1's yes/no/on/off, read as strings
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:
                pass  # an int beyond any float: the error below
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
    raise NlpipeError(f"{where}: expected {_type_name(tp)}, got {shorten(value)} ({type(value).__name__})")


def _build(cls: type, raw: Any, source: str, prefix: str) -> Any:
    """Build a section dataclass from raw YAML, rejecting unknown keys and missing required ones."""
    label = prefix.rstrip(".") or "(top level)"
    if not isinstance(raw, dict):
        raise NlpipeError(f"{source}: key '{label}': expected a mapping, got {shorten(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in ("source", "sample_applied")}
    unknown = sorted(set(raw) - set(fields), key=str)
    if unknown:
        raise NlpipeError(
            f"{source}: unknown key {shorten(f'{prefix}{unknown[0]}')}; valid keys here: {', '.join(fields)}"
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
            if _is_numeric_hint(tp):
                limit_for(cls, name).check(kwargs[name], f"{source}: key '{key}'")
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
        raise NlpipeError(f"{source}: key 'task': unknown task {shorten(recipe.task)}; choose one of {', '.join(TASKS)}")
    if "type" not in recipe.model:
        raise NlpipeError(f"{source}: missing required key 'model.type' (e.g. rnn_tagger, bert, rnn_seq2seq)")
    if "spec" not in recipe.tokenizer:
        raise NlpipeError(f"{source}: missing required key 'tokenizer.spec' (a file name in tokenizers/)")
    if recipe.train.mixed_precision not in ("no", "bf16", "fp16", "auto"):
        raise NlpipeError(f"{source}: key 'train.mixed_precision': choose no, bf16, fp16 or auto")
    if recipe.train.optimizer not in ("adam", "adamw", "sgd"):
        raise NlpipeError(f"{source}: key 'train.optimizer': choose adam, adamw or sgd")
    if recipe.train.average_checkpoints_until not in ("last", "best"):
        raise NlpipeError(f"{source}: key 'train.average_checkpoints_until': choose last or best")
    if recipe.task not in ("masked-lm", "causal-lm"):
        for key in ("extra_datasets", "text_files"):
            if getattr(recipe.data, key):
                raise NlpipeError(f"{source}: key 'data.{key}': only tasks masked-lm and causal-lm read unlabelled "
                                  "text; remove it")
    if recipe.train.label_smoothing and recipe.task not in ("translation", "summarization"):
        raise NlpipeError(f"{source}: key 'train.label_smoothing': only translation and summarization recipes "
                          "smooth their targets; remove it")
    if recipe.train.teacher and recipe.task != "token-classification":
        raise NlpipeError(f"{source}: key 'train.teacher': only token-classification recipes distil from a "
                          "teacher; remove it")
    if not 0 <= recipe.train.distill_alpha <= 1 or not recipe.train.distill_temperature > 0:
        raise NlpipeError(f"{source}: key 'train.distill_alpha' must be in [0, 1] and 'train.distill_temperature' "
                          "> 0")
    from .training.budget import check_budget

    check_budget(recipe.train, source)
    for split in recipe.eval.splits:
        if split not in ("train", "validation", "test"):
            raise NlpipeError(f"{source}: key 'eval.splits': unknown split {shorten(split)}; use train, validation, test")
    for key, value in recipe.generate.items():
        if key in GENERATE_LIMITS:
            GENERATE_LIMITS[key].check(value, f"{source}: key 'generate.{key}'")
    for key, value in recipe.tokenizer.items():  # early; the spec's own file is checked by load_spec
        if key in FIELD_LIMITS["TokenizerSpec"]:
            FIELD_LIMITS["TokenizerSpec"][key].check(value, f"{source}: key 'tokenizer.{key}'")
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
    """Parse recipe YAML text (a file's or stdin's) with `RecipeLoader`; problems name `source` and the line."""
    return load_yaml_text(text, source)


_TASK_DATA_KINDS = {
    "token-classification": ("ner",), "translation": ("translation", "summarization"),
    "summarization": ("summarization", "translation"), "causal-lm": ("lm",),
    # pretraining reads the text of any training split, labels dropped (tasks/masked_lm.py)
    "masked-lm": ("ner", "translation", "summarization", "lm"),
}
"""The catalog kinds (`nlpipe.data.catalog.DatasetSource.kind`) each task reads: same record format."""


def _sample_overrides(raw: dict[str, Any], source: str) -> list[str]:
    """The recipe's ``sample`` section as ``key.sub=value`` overrides (checked: a mapping of dotted keys)."""
    section = raw.get("sample") or {}
    if not isinstance(section, dict):
        raise NlpipeError(f"{source}: key 'sample': expected a mapping of key.sub: value, e.g. train.max_steps: 300")
    items = []
    for key, value in section.items():
        if not isinstance(key, str) or key.split(".")[0] in ("sample", "name", "task") or "." not in key:
            raise NlpipeError(
                f"{source}: key 'sample.{key}': expected a dotted setting such as train.max_steps or model.hidden_size"
            )
        items.append(f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}")
    return items


def load_recipe(name_or_path: str, overrides: list[str] | None = None, *, sample: bool = False) -> Recipe:
    """Resolve, read, apply overrides to and validate a recipe. See `resolve_recipe_path`.

    With ``sample=True`` (a run on the built-in sample data) the recipe's ``sample`` settings are applied
    first, then `overrides`. The ``sample`` settings are validated either way, so a typo there is found by
    ``nlpipe recipes validate`` and not only on the first sample run.
    """
    path = resolve_recipe_path(name_or_path)
    return recipe_from_yaml(read_yaml(path), str(path), overrides, sample=sample)


def recipe_from_yaml(raw: Any, source: str, overrides: list[str] | None = None, *, sample: bool = False) -> Recipe:
    """Validate parsed recipe YAML from any source (a file, ``-`` for stdin), overrides applied (after the
    recipe's ``sample`` settings when ``sample=True``; see `load_recipe`)."""
    path = source
    if raw is None:
        raise NlpipeError(f"{path}: the recipe is empty")
    if not isinstance(raw, dict):
        raise NlpipeError(f"{path}: a recipe must be a mapping of keys (name, task, data, model, ...)")
    profile = _sample_overrides(raw, str(path))
    from .model_registry import validate_model_section  # late: registry imports transformers

    overrides = overrides or []
    recipe = parse_recipe(apply_layer(raw, overrides, str(path)), str(path))
    validate_model_section(recipe)
    from .data.catalog import get_source

    kind = get_source(recipe.data.dataset, recipe.source).kind  # unknown data set: now, not after loading
    if kind not in _TASK_DATA_KINDS[recipe.task]:
        raise NlpipeError(
            f"{recipe.source}: key 'data.dataset': '{recipe.data.dataset}' holds {kind} data, which task "
            f"'{recipe.task}' cannot train on; choose a data set of kind {' or '.join(_TASK_DATA_KINDS[recipe.task])}"
        )
    if recipe.model.get("init_from"):  # the pretrained model defines the architecture: sample sizes do not apply
        profile = [item for item in profile if not item.startswith("model.")]
    if not profile:
        return recipe
    try:
        with_profile = parse_recipe(apply_layer(apply_layer(raw, profile, str(path)), overrides, str(path)), str(path))
        validate_model_section(with_profile)
    except NlpipeError as exc:
        raise NlpipeError(f"{exc} (with the recipe's 'sample' settings applied; fix the 'sample' section)") from exc
    with_profile.sample_applied = profile
    return with_profile if sample else recipe


def dump_recipe(recipe: Recipe, path: Path) -> None:
    """Write the resolved recipe (overrides applied) as YAML, first line the command that reruns it."""
    header = f"# nlpipe run recipe {path.name}\n# resolved from {recipe.source}\n"
    if recipe.sample_applied:
        header += f"# sample settings applied (--data sample): {' '.join(recipe.sample_applied)}\n"
    path.write_text(header + yaml.safe_dump(recipe.to_dict(), sort_keys=False), encoding="utf-8")
