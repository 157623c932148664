"""Compare finished runs: one Markdown and one self-contained HTML report with a table and plots.

``nlpipe compare runs/ner-bilstm runs/ner-bigru --out report/`` reads each run folder's
``metrics.json``, ``run_info.json``, ``recipe.yaml`` and ``train_log.jsonl`` and writes::

    report/
      report.md      the table(s) per task + the figures as PNG links
      report.html    the same, images inlined (base64): one file to send or open
      <task>-score-vs-parameters.png, <task>-score-vs-time.png, <task>-learning-curves.png,
      <task>-score-by-length.png (only when the metrics have ``<metric>_len_<bucket>`` keys)

``compare_recipes("ner-*", ...)`` first runs the matching recipes (each in a fresh process, so its
peak memory can be measured and written to ``metrics.json`` as ``peak_memory_mb``) and then compares.
"""

from __future__ import annotations

import base64
import fnmatch
import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import NlpipeError
from .experiments.reporting import save_figure

# The figure a table shows in place of a selection metric that published results do not report.
# SAMSum papers (and Hugging Face's run_summarization) give summary-level ROUGE-L, i.e. rougeLsum;
# runs may still select their checkpoint on sentence-level rougeL. Language models are compared per
# word (PTB/WikiText-2 results are word-level): a subword model's token perplexity is not comparable,
# and for word-level models the two are equal.
COMPARABLE_METRIC: dict[str, str] = {"rougeL": "rougeLsum", "perplexity": "word_perplexity"}


def comparable_metric(selection_metric: str, scores: dict[str, Any]) -> str:
    """The metric a report table shows for a run that selects on `selection_metric`.

    Returns `COMPARABLE_METRIC`'s substitute when the run's `scores` have it, else
    `selection_metric` itself (older runs without ``rougeLsum`` keep their ``rougeL``).
    """
    substitute = COMPARABLE_METRIC.get(selection_metric)
    return substitute if substitute is not None and substitute in scores else selection_metric


_LEN_KEY = re.compile(r"^(?P<metric>.+)_len_(?P<bucket>.+)$")
MISSING = "–"


@dataclass
class RunSummary:
    """What the report shows about one run folder."""

    run_dir: Path
    name: str
    task: str
    recipe: str
    model_type: str
    parameters: int | None
    metric: str
    """The metric shown (`comparable_metric` of the selection metric)."""
    score: float | None
    score_split: str
    greater_is_better: bool
    wall_s: float | None
    tokens_per_s: float | None
    peak_memory_mb: float | None
    device: str
    curve: list[tuple[int, float]] = field(default_factory=list)
    """(step, validation value of `metric`) from train_log.jsonl."""
    buckets: dict[str, float] = field(default_factory=dict)
    """Input-length bucket → score, from ``<metric>_len_<bucket>`` keys of the scored split."""
    selection_metric: str = ""
    """The metric the run chose its best checkpoint on (may differ from `metric`)."""
    data: str = MISSING
    """Which data the run used (``nlpipe built-in sample (...)``, ``conll2003 (local files)``, ...)."""
    processes: str = MISSING
    """Training processes and threads per process, e.g. ``2 × 1 thread``."""
    train_tokens: float | None = None
    """Training tokens seen (``metrics.json`` ``train.tokens``)."""
    tokens_per_step: float | None = None
    """Training tokens per optimizer step (``train.tokens / train.steps``): turns logged steps into tokens."""
    eval_examples_per_s: float | None = None
    """Inference speed: examples of `score_split` evaluated per second (``metrics.json`` ``eval_speed``)."""
    seed: int | None = None
    init_from: str | None = None
    """``model.init_from`` of the run's recipe (a pretrained start), if any."""
    pretrain_wall_s: float | None = None
    """Training wall time of the ``init_from`` run folder, when it is a local nlpipe run."""
    pretrain_tokens: float | None = None
    warmup_steps: int | None = None
    """The recipe's ``train.warmup_steps``."""
    planned_steps: int | None = None
    """Steps the run's ``train.budget`` was planned as (``metrics.json``), when it had one."""
    settings: dict[str, str] = field(default_factory=dict)
    """The run's resolved recipe as flat ``key.sub → value`` text, without what seeds and names change
    (`NOT_SETTINGS`): runs of one recipe are seeds of one leaderboard entry only when these agree."""


NOT_SETTINGS = ("name", "description", "train.seed")
"""Recipe keys that do not make two runs different settings (seeds of one entry differ only in these)."""


def flat_settings(recipe: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A resolved recipe as ``{"train.learning_rate": "0.002", ...}`` (JSON text values), less `NOT_SETTINGS`."""
    flat: dict[str, str] = {}
    for key, value in recipe.items():
        name = f"{prefix}{key}"
        if name in NOT_SETTINGS:
            continue
        if isinstance(value, dict):
            flat.update(flat_settings(value, f"{name}."))
        else:
            flat[name] = json.dumps(value, sort_keys=True, default=str)
    return flat


def _number(value: Any) -> float | None:
    """A metric value as a number, or None when it is missing, not a number, or not finite (shown as '–')."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value


def _section(mapping: Any, key: str) -> dict[str, Any]:
    """``mapping[key]`` when both are mappings, else an empty one (a malformed section reads as missing)."""
    value = mapping.get(key) if isinstance(mapping, dict) else None
    return value if isinstance(value, dict) else {}


def read_curve(log_path: Path, metric: str) -> list[tuple[int, float]]:
    """(step, validation `metric`) pairs from a ``train_log.jsonl``.

    A half-written last line (a run killed while logging) and records without numbers are skipped.

    Raises:
        NlpipeError: the file is not UTF-8, or a line other than the last is not JSON (naming file and line).
    """
    try:
        lines = log_path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise NlpipeError(f"{log_path}: not UTF-8 text; the log is damaged — rerun the run or leave it out") from None
    curve = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                continue  # half-written by a kill: the lines before it are whole
            raise NlpipeError(
                f"{log_path}: line {number}: not valid JSON ({exc.msg}); the log is damaged — rerun the run or "
                "leave it out of the comparison"
            ) from None
        if not isinstance(record, dict) or record.get("split") != "validation":
            continue
        value, step = _number(record.get(metric)), _number(record.get("step"))
        if value is not None:
            curve.append((int(step) if step is not None else len(curve), float(value)))
    return curve


def _model_label(model: dict[str, Any]) -> str:
    """``rnn_tagger`` plus the settings that tell recurrent variants apart (cell, direction, attention)."""
    label = str(model.get("type", "?"))
    details = []
    for key in ("cell", "encoder_cell", "attention"):
        if key in model:
            details.append(str(model[key]))
    if model.get("bidirectional") is True:
        details.append("bi")
    elif model.get("bidirectional") is False:
        details.append("uni")
    return f"{label} ({', '.join(details)})" if details else label


def load_run_summary(run_dir: str | Path) -> RunSummary:
    """Read a finished run folder into a `RunSummary`.

    The score is the recipe's selection metric on the test split (validation when there is no test).

    Raises:
        NlpipeError: the folder or its ``metrics.json`` is missing or unreadable.
    """
    from .run_folder import check_run_folder

    run_dir = Path(run_dir)
    checked = check_run_folder(run_dir, "compare", needs=("metrics",))
    metrics = checked.metrics or {}
    info, recipe = checked.info, checked.recipe_raw

    eval_section = _section(recipe, "eval")
    selection = str(metrics.get("selection_metric") or eval_section.get("metric") or "")
    split = "test" if isinstance(metrics.get("test"), dict) else "validation"
    scores = _section(metrics, split)
    metric = comparable_metric(selection, scores)
    score = _number(scores.get(metric))
    train = _section(metrics, "train")
    buckets = {}
    for key, value in scores.items():
        found = _LEN_KEY.match(key)
        if found and found.group("metric") == metric and _number(value) is not None:
            buckets[found.group("bucket")] = float(value)

    log_path = run_dir / "train_log.jsonl"
    # The shown metric where the log has it (rougeLsum), else the selection metric.
    curve = (read_curve(log_path, metric) or read_curve(log_path, selection)) if log_path.is_file() else []

    peak = _number(metrics.get("peak_memory_mb", train.get("peak_memory_mb")))
    parameters = _number(metrics.get("parameters"))
    from .data.catalog import source_label

    dataset = str(info.get("dataset") or (recipe.get("data") or {}).get("dataset") or MISSING)
    recorded = metrics.get("data") if isinstance(metrics.get("data"), dict) else {}
    data_label = recorded.get("description") or (source_label(dataset, info["data"]) if "data" in info else dataset)
    device, threads = _split_machine(str(info.get("machine") or MISSING))
    n_proc = info.get("num_processes")
    processes = MISSING if n_proc is None else f"{n_proc}" + (f" × {threads}" if threads else "")
    tokens, steps = _number(train.get("tokens")), _number(train.get("steps"))
    speed = _number(_section(_section(metrics, "eval_speed"), split).get("examples_per_s"))
    seed = _number(_section(recipe, "train").get("seed"))
    init_from = _section(recipe, "model").get("init_from")
    init_from = str(init_from) if init_from not in (None, "") else None
    pretrain = _pretraining_cost(init_from)
    warmup = _number(_section(recipe, "train").get("warmup_steps"))
    planned = _number(_section(train, "budget").get("planned_steps"))
    return RunSummary(
        run_dir=run_dir,
        name=run_dir.name,
        task=str(info.get("task") or recipe.get("task") or "unknown"),
        recipe=str(info.get("recipe") or recipe.get("name") or run_dir.name),
        model_type=_model_label(_section(recipe, "model")),
        parameters=int(parameters) if parameters is not None else None,
        metric=metric,
        score=float(score) if score is not None else None,
        score_split=split,
        greater_is_better=bool(eval_section.get("greater_is_better", "perplexity" not in selection)),
        wall_s=_number(train.get("wall_s")),
        tokens_per_s=_number(train.get("tokens_per_s")),
        peak_memory_mb=float(peak) if peak is not None else None,
        device=device,
        curve=curve,
        buckets=buckets,
        selection_metric=selection,
        data=data_label,
        processes=processes,
        train_tokens=tokens,
        tokens_per_step=tokens / steps if tokens and steps else None,
        eval_examples_per_s=speed,
        seed=int(seed) if seed is not None else None,
        init_from=init_from,
        pretrain_wall_s=pretrain[0],
        pretrain_tokens=pretrain[1],
        warmup_steps=int(warmup) if warmup is not None else None,
        planned_steps=int(planned) if planned is not None else None,
        settings=flat_settings(recipe),
    )


def _split_machine(machine: str) -> tuple[str, str | None]:
    """``"CPU Xeon, 1 threads"`` → (``"CPU Xeon"``, ``"1 thread"``): threads are per process, shown with them."""
    found = re.fullmatch(r"(?P<device>.*), (?P<n>\d+) threads?", machine)
    if not found:
        return machine, None
    n = int(found.group("n"))
    return found.group("device"), f"{n} thread" + ("s" if n != 1 else "")


def _pretraining_cost(init_from: str | None) -> tuple[float | None, float | None]:
    """(training wall s, training tokens) of a local ``init_from`` run folder; Nones when unknown (a Hub id)."""
    if not init_from:
        return None, None
    path = Path(init_from).expanduser() / "metrics.json"
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None, None
    train = _section(metrics, "train")
    return _number(train.get("wall_s")), _number(train.get("tokens"))


# ----------------------------------------------------------------------------------------------- table

TABLE_COLUMNS = (
    "run", "recipe", "model type", "data", "parameters", "score", "metric", "train wall time (s)", "tokens/s",
    "peak memory (MB)", "processes", "device",
)


def _fmt(value: float | int | None, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, int) and digits == 0:
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def table_rows(runs: list[RunSummary]) -> list[list[str]]:
    """The report table's cells (strings), one row per run, in `TABLE_COLUMNS` order."""
    return [
        [
            run.name, run.recipe, run.model_type, run.data, _fmt(run.parameters, 0), _fmt(run.score, 2),
            f"{run.metric} ({run.score_split})", _fmt(run.wall_s, 1), _fmt(run.tokens_per_s, 0),
            _fmt(run.peak_memory_mb, 0), run.processes, run.device,
        ]
        for run in runs
    ]


def _markdown_table(header: tuple[str, ...] | list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- plots


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "task"


def _plot_scatter(runs: list[RunSummary], x_attr: str, x_label: str, path: Path, log_x: bool) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(getattr(r, x_attr), r.score, r.name) for r in runs if getattr(r, x_attr) and r.score is not None]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6, 4), dpi=90)
    for x, y, name in points:
        ax.scatter([x], [y], s=40)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel(f"{runs[0].metric} ({runs[0].score_split})")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _plot_curves(runs: list[RunSummary], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_curves = [r for r in runs if r.curve]
    if not with_curves:
        return None
    fig, ax = plt.subplots(figsize=(6, 4), dpi=90)
    for run in with_curves:
        steps, values = zip(*run.curve, strict=True)
        ax.plot(steps, values, marker="o", markersize=3, label=run.name)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"validation {runs[0].metric}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def bucket_label(bucket: str) -> str:
    """A length-bucket key as people write it: ``01_10`` → ``1–10``, ``21_plus`` → ``21+`` (others unchanged)."""
    found = re.fullmatch(r"0*(\d+)[_-]0*(\d+)", bucket)
    if found:
        return f"{found.group(1)}–{found.group(2)}"
    found = re.fullmatch(r"0*(\d+)(?:_plus|\+)", bucket)
    return f"{found.group(1)}+" if found else bucket


def _plot_buckets(runs: list[RunSummary], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_buckets = [r for r in runs if r.buckets]
    if not with_buckets:
        return None
    order: list[str] = []
    for run in with_buckets:
        order += [b for b in run.buckets if b not in order]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=90)
    width = 0.8 / len(with_buckets)
    for i, run in enumerate(with_buckets):
        xs = [j + i * width for j, b in enumerate(order) if b in run.buckets]
        ax.bar(xs, [run.buckets[b] for b in order if b in run.buckets], width=width, label=run.name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(order))], [bucket_label(b) for b in order])
    ax.set_xlabel("input length (words)")
    ax.set_ylabel(f"{runs[0].metric} ({runs[0].score_split})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)



# ----------------------------------------------------------------------------------------------- leaderboard

LEADERBOARD_COLUMNS = (
    "rank", "recipe", "model type", "seeds", "score (mean ± sd)", "metric", "parameters", "training tokens",
    "tokens/s", "eval examples/s", "peak memory (MB)", "pretrained from",
)


@dataclass
class LeaderboardEntry:
    """One recipe of a task's leaderboard: its runs (one per seed) aggregated."""

    task: str
    recipe: str
    model_type: str
    metric: str
    score_split: str
    greater_is_better: bool
    runs: list[str]
    seeds: list[int | None]
    scores: list[float]
    mean: float | None
    spread: float | None
    """Sample standard deviation of `scores` (n − 1 in the denominator); None for fewer than two."""
    parameters: int | None
    train_tokens: float | None
    tokens_per_s: float | None
    eval_examples_per_s: float | None
    peak_memory_mb: float | None
    """The largest over the seeds."""
    init_from: str | None = None
    pretrain_wall_s: float | None = None
    pretrain_tokens: float | None = None
    curve: list[tuple[float, float, float, float]] = field(default_factory=list)
    """(training tokens seen, mean, min, max of the validation metric over seeds) at the logged evaluations."""


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _budget_curve(runs: list[RunSummary]) -> list[tuple[float, float, float, float]]:
    """Validation metric against training tokens seen, averaged over the seeds at the steps they share.

    Tokens at a logged step are ``step × tokens per step`` of that run (its ``train.tokens / train.steps``).
    """
    curves = [({step: value for step, value in r.curve}, r.tokens_per_step) for r in runs if r.curve and r.tokens_per_step]
    if not curves:
        return []
    shared = sorted(set.intersection(*(set(c) for c, _ in curves)))
    points = []
    for step in shared:
        values = [c[step] for c, _ in curves]
        tokens = sum(step * per for _, per in curves) / len(curves)
        points.append((tokens, sum(values) / len(values), min(values), max(values)))
    return points


def _setting_groups(runs: list[RunSummary]) -> dict[tuple[str, str], list[RunSummary]]:
    """Runs grouped by task and recipe *settings* (only seeds of the same settings are one entry), each
    group keyed by its label: the recipe name, followed — when runs of one recipe were made with different
    settings (e.g. a distilled student beside the plain recipe) — by the settings that tell them apart."""
    by_settings: dict[tuple[str, str, tuple[tuple[str, str], ...]], list[RunSummary]] = {}
    for run in runs:
        by_settings.setdefault((run.task, run.recipe, tuple(sorted(run.settings.items()))), []).append(run)
    variants: dict[tuple[str, str], list[dict[str, str]]] = {}
    for task, recipe, settings in by_settings:
        variants.setdefault((task, recipe), []).append(dict(settings))
    grouped: dict[tuple[str, str], list[RunSummary]] = {}
    for (task, recipe, settings), group in by_settings.items():
        others = variants[(task, recipe)]
        values = dict(settings)
        differing = sorted({k for v in others for k in v
                            if any(o.get(k, "null") != v.get(k, "null") for o in others)})
        shown = [f"{k}={json.loads(values[k])}" for k in differing
                 if json.loads(values.get(k, "null")) not in (None, "", [], {})]
        label = f"{recipe} [{', '.join(shown)}]" if shown else recipe
        while (task, label) in grouped:  # settings that differ only between empty values: still apart
            label += "′"
        grouped[(task, label)] = group
    return grouped


def leaderboard(runs: list[RunSummary]) -> dict[str, list[LeaderboardEntry]]:
    """Runs grouped by task, then by recipe and settings (the seeds of one recipe are one entry; runs of a
    recipe with other settings are another, labelled by what differs), best mean first."""
    import statistics

    grouped = _setting_groups(runs)
    boards: dict[str, list[LeaderboardEntry]] = {}
    for (task, recipe), group in grouped.items():
        scores = [r.score for r in group if r.score is not None]
        first = group[0]
        params = [r.parameters for r in group if r.parameters is not None]
        peaks = [r.peak_memory_mb for r in group if r.peak_memory_mb is not None]
        boards.setdefault(task, []).append(LeaderboardEntry(
            task=task, recipe=recipe, model_type=first.model_type, metric=first.metric,
            score_split=first.score_split, greater_is_better=first.greater_is_better,
            runs=[str(r.run_dir) for r in group], seeds=[r.seed for r in group], scores=scores,
            mean=statistics.fmean(scores) if scores else None,
            spread=statistics.stdev(scores) if len(scores) > 1 else None,
            parameters=params[0] if params else None,
            train_tokens=_mean([r.train_tokens for r in group]),
            tokens_per_s=_mean([r.tokens_per_s for r in group]),
            eval_examples_per_s=_mean([r.eval_examples_per_s for r in group]),
            peak_memory_mb=max(peaks) if peaks else None,
            init_from=first.init_from, pretrain_wall_s=first.pretrain_wall_s, pretrain_tokens=first.pretrain_tokens,
            curve=_budget_curve(group),
        ))
    for entries in boards.values():
        # Best first; entries without a score last.
        entries.sort(key=lambda e: (e.mean is None, -(e.mean or 0.0) if e.greater_is_better else (e.mean or 0.0)))
    return boards


def leaderboard_rows(entries: list[LeaderboardEntry]) -> list[list[str]]:
    """The leaderboard table's cells, in `LEADERBOARD_COLUMNS` order."""
    rows = []
    for rank, e in enumerate(entries, start=1):
        score = _fmt(e.mean, 2) + (f" ± {e.spread:.2f}" if e.spread is not None else "")
        rows.append([
            str(rank), e.recipe, e.model_type, str(len(e.scores)), score, f"{e.metric} ({e.score_split})",
            _fmt(e.parameters, 0), _fmt(e.train_tokens, 0), _fmt(e.tokens_per_s, 0),
            _fmt(e.eval_examples_per_s, 1), _fmt(e.peak_memory_mb, 0), e.init_from or MISSING,
        ])
    return rows


def pretraining_rows(entries: list[LeaderboardEntry]) -> list[list[str]]:
    """One row per recipe that starts from a pretrained body: what the pretraining cost (not in the table above)."""
    return [[e.recipe, e.init_from or "", _fmt(e.pretrain_wall_s, 1), _fmt(e.pretrain_tokens, 0)]
            for e in entries if e.init_from]


def _plot_budget(entries: list[LeaderboardEntry], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_curves = [e for e in entries if e.curve]
    if not with_curves:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=90)
    for entry in with_curves:
        tokens, means, lows, highs = zip(*entry.curve, strict=True)
        line = ax.plot(tokens, means, marker="o", markersize=3, label=entry.recipe)[0]
        if len(entry.scores) > 1:
            ax.fill_between(tokens, lows, highs, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("training tokens seen")
    ax.set_ylabel(f"validation {entries[0].metric}")
    if "perplexity" in entries[0].metric:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _entry_json(entry: LeaderboardEntry) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(entry)


# ----------------------------------------------------------------------------------------------- report


@dataclass
class Report:
    """Where the report went and what it holds."""

    markdown: Path
    html: Path
    figures: list[Path]
    runs: list[RunSummary]


def compare_runs(run_dirs: list[str | Path], out_dir: str | Path = "report", notes: list[str] | None = None) -> Report:
    """Write ``report.md``, ``report.html``, ``leaderboard.json`` and the PNG plots comparing `run_dirs` into `out_dir`.

    Runs are grouped by task (one table and one set of plots per task: scores of different tasks
    are not comparable). Each task opens with its leaderboard: the runs of one recipe (its seeds)
    aggregated as mean ± sample standard deviation, best first, and a quality-vs-budget plot. `notes`
    (how the runs were made, e.g. the shared budget) go under the title.

    Raises:
        NlpipeError: no run folders, or one of them is not a finished run.
    """
    from .run_folder import refuse_run_folder

    if not run_dirs:
        raise NlpipeError("nothing to compare: give one or more run folders (or --recipes GLOB)")
    refuse_run_folder(out_dir, "--out")
    runs = [load_run_summary(d) for d in run_dirs]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_task: dict[str, list[RunSummary]] = {}
    for run in runs:
        by_task.setdefault(run.task, []).append(run)

    boards = leaderboard(runs)
    md = ["# nlpipe comparison", "", f"{len(runs)} run(s): " + ", ".join(f"`{r.run_dir}`" for r in runs), ""]
    md += [f"- {note}" for note in notes or []] + ([""] if notes else [])
    html_parts = [f"<h1>nlpipe comparison</h1><p>{len(runs)} run(s)</p>"]
    html_parts += [f"<p>{html.escape(note)}</p>" for note in notes or []]
    figures: list[Path] = []
    for task, task_runs in by_task.items():
        metrics = sorted({r.metric for r in task_runs})
        md += [f"## {task}", ""]
        entries = boards[task]
        for run in task_runs:
            if run.warmup_steps and run.planned_steps and run.warmup_steps * 2 > run.planned_steps:
                md += [f"Warning: `{run.name}` warms up for {run.warmup_steps} steps of the {run.planned_steps} its "
                       "budget buys, so it hardly trains at its peak learning rate; at a budget this small its "
                       "score says more about the schedule than the architecture (lower `train.warmup_steps`).", ""]
        md += ["### leaderboard", "",
               "Runs of one recipe are aggregated over their seeds: mean ± sample standard deviation (n − 1). "
               "tokens/s is training throughput; eval examples/s is the speed of the task's own evaluation "
               "(prediction, generation for seq2seq) on the scored split; peak memory is the largest over the seeds.",
               "", _markdown_table(LEADERBOARD_COLUMNS, leaderboard_rows(entries)), ""]
        html_parts.append(f"<h2>{html.escape(task)}</h2><h3>leaderboard</h3>")
        html_parts.append(_html_table(LEADERBOARD_COLUMNS, leaderboard_rows(entries)))
        pre = pretraining_rows(entries)
        if pre:
            header = ("recipe", "pretrained from", "pretraining wall time (s)", "pretraining tokens")
            md += ["### pretraining cost", "",
                   "Not counted in the leaderboard above: the `init_from` run's own training.", "",
                   _markdown_table(header, pre), ""]
            html_parts += ["<h3>pretraining cost</h3>", _html_table(header, pre)]
        budget_plot = _plot_budget(entries, out / f"{_safe(task)}-quality-vs-budget.png")
        if budget_plot is not None:
            figures.append(budget_plot)
            md += ["### quality vs budget", "", "Validation score against training tokens seen (mean over seeds; "
                   "the band is min–max): who wins at which budget.", "",
                   f"![quality vs budget]({budget_plot.name})", ""]
            data = base64.b64encode(budget_plot.read_bytes()).decode("ascii")
            html_parts.append(f"<h3>quality vs budget</h3><img alt=\"quality vs budget\" "
                              f"src=\"data:image/png;base64,{data}\">")
        md += ["### runs", ""]
        if len(metrics) > 1:
            md += [f"Note: these runs select on different metrics ({', '.join(metrics)}); compare scores with care.", ""]
        substituted = sorted({(r.selection_metric, r.metric) for r in task_runs if r.selection_metric != r.metric})
        for selection, shown in substituted:
            md += [f"Note: `{shown}` is shown for runs that select on `{selection}`: it is the figure published "
                   f"results report (for ROUGE-L, summary-level ROUGE-L over sentences; for language models, "
                   f"perplexity per word, whatever the tokenizer), so it is the comparable one.", ""]
        rows = table_rows(task_runs)
        md += [_markdown_table(TABLE_COLUMNS, rows), ""]
        html_parts.append(_html_table(TABLE_COLUMNS, rows))
        stem = _safe(task)
        plots = [
            ("score vs parameters", _plot_scatter(task_runs, "parameters", "trainable parameters",
                                                  out / f"{stem}-score-vs-parameters.png", log_x=True)),
            ("score vs training time", _plot_scatter(task_runs, "wall_s", "training wall time (s)",
                                                     out / f"{stem}-score-vs-time.png", log_x=False)),
            ("learning curves", _plot_curves(task_runs, out / f"{stem}-learning-curves.png")),
            ("score by input length", _plot_buckets(task_runs, out / f"{stem}-score-by-length.png")),
        ]
        for title, path in plots:
            if path is None:
                continue
            figures.append(path)
            md += [f"### {title}", "", f"![{title}]({path.name})", ""]
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            html_parts.append(f"<h3>{html.escape(title)}</h3><img alt=\"{html.escape(title)}\" "
                              f"src=\"data:image/png;base64,{data}\">")
    (out / "leaderboard.json").write_text(
        json.dumps({task: [_entry_json(e) for e in entries] for task, entries in boards.items()}, indent=2),
        encoding="utf-8")
    md_path = out / "report.md"
    md_path.write_text("\n".join(md), encoding="utf-8")
    html_path = out / "report.html"
    html_path.write_text(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>nlpipe comparison</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}img{max-width:100%}"
        "</style></head><body>" + "\n".join(html_parts) + "</body></html>",
        encoding="utf-8",
    )
    return Report(markdown=md_path, html=html_path, figures=figures, runs=runs)


def _html_table(header: tuple[str, ...], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# ----------------------------------------------------------------------------------------------- run then compare


def _run_one_measured(name: str, overrides: list[str], data: str | None, data_dir: str | None,
                      output_dir: str) -> None:
    """Child process: run a recipe, then add its peak memory to metrics.json (max RSS of this process)."""
    import resource
    import sys

    from .progress import enabled as progress_enabled
    from .run import run_recipe

    result = run_recipe(name, overrides, data=data, data_dir=data_dir, output_dir=output_dir, overwrite=True,
                        progress=progress_enabled())
    # ru_maxrss is KiB on Linux, bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_mb = rss / 2**20 if sys.platform == "darwin" else rss / 1024
    metrics_path = result.run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["peak_memory_mb"] = round(peak_mb, 1)
    try:
        import torch

        if torch.cuda.is_available():
            metrics["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    except ImportError:
        pass
    metrics_path.write_text(json.dumps(metrics, indent=2))


def matching_recipes(pattern: str) -> list[str]:
    """Recipe names matching a shell glob (``ner-*``), or several separated by commas (``ner-bi*,ner-bert``).

    Raises:
        NlpipeError: nothing matches (the message lists the recipes).
    """
    from .recipe import list_recipes

    known = list_recipes()
    globs = [g.strip() for g in pattern.split(",") if g.strip()]
    names = [n for n in known if any(fnmatch.fnmatch(n, g) for g in globs)]
    if not names:
        raise NlpipeError(f"--recipes {pattern}: no recipe matches; known: {', '.join(known)}")
    return names


STOPS_BEFORE_BUDGET = ("train.max_steps", "train.max_train_minutes", "train.early_stopping_patience")
"""Recipe settings that can end a run before its budget: an equal-budget comparison turns them off."""


def equal_budget_overrides(overrides: list[str]) -> list[str]:
    """The extra overrides that make every run spend the whole ``train.budget`` set in `overrides`.

    A budget does not switch off a recipe's own ``max_steps``, ``max_train_minutes`` or early stopping
    (docs/fair-comparison.md), so one architecture could stop at 5 minutes while another spends the
    budget. Each of those not set explicitly in `overrides` is set to null. No budget: nothing changes.
    """
    keys = {item.split("=", 1)[0].strip() for item in overrides}
    if not any(key.startswith("train.budget.") for key in keys):
        return []
    return [f"{key}=null" for key in STOPS_BEFORE_BUDGET if key not in keys]


def _join_forwarding_sigterm(child: Any) -> None:
    """Wait for a run's process; a SIGTERM to this process (``timeout``, a scheduler) is passed on to it,
    so no training is left running on its own when the comparison is stopped."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        child.join()
        return

    def forward(signum: int, frame: Any) -> None:
        child.terminate()  # the run saves a checkpoint and stops (see nlpipe/training/loop.py)
        child.join()
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        child.join()
    finally:
        signal.signal(signal.SIGTERM, previous)


def compare_recipes(
    pattern: str,
    out_dir: str | Path = "report",
    *,
    overrides: list[str] | None = None,
    data: str | None = None,
    data_dir: str | Path | None = None,
    runs_dir: str | Path = "runs",
    extra_run_dirs: list[str | Path] | None = None,
    seeds: int = 1,
) -> Report:
    """Run every recipe matching `pattern` (each in a fresh process, peak memory recorded), then compare.

    Runs go to ``<runs_dir>/<recipe>`` (replaced if present); with ``seeds > 1`` to
    ``<runs_dir>/<recipe>-seed<S>`` for S = the recipe's ``train.seed`` + 0, 1, ... `overrides` apply
    to every recipe; when they set a ``train.budget``, `equal_budget_overrides` switch off what would
    stop a run before its budget. The report's leaderboard aggregates each recipe's seeds.

    Raises:
        NlpipeError: no recipe matches, a bad override, fewer than one seed, or a run fails (the
            child's error is passed on).
    """
    import multiprocessing

    from .recipe import load_recipe

    if seeds < 1:
        raise NlpipeError(f"--seeds {seeds}: give a number of seeds of 1 or more")
    names = matching_recipes(pattern)
    overrides = list(overrides or [])
    neutralised = equal_budget_overrides(overrides)
    overrides += neutralised
    plans = []
    for name in names:  # every recipe checked (overrides included) before the first run starts
        base = load_recipe(name, overrides).train.seed
        for offset in range(seeds):
            seed = base + offset
            target = Path(runs_dir) / (name if seeds == 1 else f"{name}-seed{seed}")
            plans.append((name, [*overrides, f"train.seed={seed}"] if seeds > 1 else overrides, target))
    context = multiprocessing.get_context("spawn")
    run_dirs: list[str | Path] = list(extra_run_dirs or [])
    for name, run_overrides, target in plans:
        child = context.Process(
            target=_run_one_measured,
            args=(name, run_overrides, data, str(data_dir) if data_dir else None, str(target)),
        )
        child.start()
        _join_forwarding_sigterm(child)
        if child.exitcode != 0:
            raise NlpipeError(f"recipe {name}: the run failed (exit code {child.exitcode}); see the messages above, "
                              f"fix it or leave it out of --recipes")
        run_dirs.append(target)
    notes = [f"{len(names)} recipe(s) matching `{pattern}`, {seeds} seed(s) each; overrides for every run: "
             + (", ".join(f"`{o}`" for o in overrides) or "none")]
    if neutralised:
        notes.append("Equal budget: every run spends the whole `train.budget`; the recipes' own stops were switched "
                     "off (" + ", ".join(f"`{o}`" for o in neutralised) + "). The best validation checkpoint is "
                     "scored, as always.")
    return compare_runs(run_dirs, out_dir, notes=notes)
