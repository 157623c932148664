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
# runs may still select their checkpoint on sentence-level rougeL.
COMPARABLE_METRIC: dict[str, str] = {"rougeL": "rougeLsum"}


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
        greater_is_better=bool(eval_section.get("greater_is_better", selection != "perplexity")),
        wall_s=_number(train.get("wall_s")),
        tokens_per_s=_number(train.get("tokens_per_s")),
        peak_memory_mb=float(peak) if peak is not None else None,
        device=device,
        curve=curve,
        buckets=buckets,
        selection_metric=selection,
        data=data_label,
        processes=processes,
    )


def _split_machine(machine: str) -> tuple[str, str | None]:
    """``"CPU Xeon, 1 threads"`` → (``"CPU Xeon"``, ``"1 thread"``): threads are per process, shown with them."""
    found = re.fullmatch(r"(?P<device>.*), (?P<n>\d+) threads?", machine)
    if not found:
        return machine, None
    n = int(found.group("n"))
    return found.group("device"), f"{n} thread" + ("s" if n != 1 else "")


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


# ----------------------------------------------------------------------------------------------- report


@dataclass
class Report:
    """Where the report went and what it holds."""

    markdown: Path
    html: Path
    figures: list[Path]
    runs: list[RunSummary]


def compare_runs(run_dirs: list[str | Path], out_dir: str | Path = "report") -> Report:
    """Write ``report.md``, ``report.html`` and the PNG plots comparing `run_dirs` into `out_dir`.

    Runs are grouped by task (one table and one set of plots per task: scores of different tasks
    are not comparable).

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

    md = ["# nlpipe comparison", "", f"{len(runs)} run(s): " + ", ".join(f"`{r.run_dir}`" for r in runs), ""]
    html_parts = [f"<h1>nlpipe comparison</h1><p>{len(runs)} run(s)</p>"]
    figures: list[Path] = []
    for task, task_runs in by_task.items():
        metrics = sorted({r.metric for r in task_runs})
        md += [f"## {task}", ""]
        if len(metrics) > 1:
            md += [f"Note: these runs select on different metrics ({', '.join(metrics)}); compare scores with care.", ""]
        substituted = sorted({(r.selection_metric, r.metric) for r in task_runs if r.selection_metric != r.metric})
        for selection, shown in substituted:
            md += [f"Note: `{shown}` is shown for runs that select on `{selection}`: it is the figure published "
                   f"results report (for ROUGE-L, summary-level ROUGE-L over sentences), so it is the comparable one.", ""]
        rows = table_rows(task_runs)
        md += [_markdown_table(TABLE_COLUMNS, rows), ""]
        html_parts.append(f"<h2>{html.escape(task)}</h2>")
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
    """Recipe names matching a shell glob (``ner-*``).

    Raises:
        NlpipeError: nothing matches (the message lists the recipes).
    """
    from .recipe import list_recipes

    known = list_recipes()
    names = [n for n in known if fnmatch.fnmatch(n, pattern)]
    if not names:
        raise NlpipeError(f"--recipes {pattern}: no recipe matches; known: {', '.join(known)}")
    return names


def compare_recipes(
    pattern: str,
    out_dir: str | Path = "report",
    *,
    overrides: list[str] | None = None,
    data: str | None = None,
    data_dir: str | Path | None = None,
    runs_dir: str | Path = "runs",
    extra_run_dirs: list[str | Path] | None = None,
) -> Report:
    """Run every recipe matching `pattern` (each in a fresh process, peak memory recorded), then compare.

    Runs go to ``<runs_dir>/<recipe>`` (replaced if present). `overrides` apply to every recipe.

    Raises:
        NlpipeError: no recipe matches, or a run fails (the child's error is passed on).
    """
    import multiprocessing

    names = matching_recipes(pattern)
    context = multiprocessing.get_context("spawn")
    run_dirs: list[str | Path] = list(extra_run_dirs or [])
    for name in names:
        target = str(Path(runs_dir) / name)
        child = context.Process(
            target=_run_one_measured,
            args=(name, list(overrides or []), data, str(data_dir) if data_dir else None, target),
        )
        child.start()
        child.join()
        if child.exitcode != 0:
            raise NlpipeError(f"recipe {name}: the run failed (exit code {child.exitcode}); see the messages above, "
                              f"fix it or leave it out of --recipes")
        run_dirs.append(target)
    return compare_runs(run_dirs, out_dir)
