"""`nlpipe runs [DIR]` and `nlpipe runs show RUN`: what run folders hold, without opening files by hand.

Reads only the small JSON/YAML files a run folder holds (no torch, no transformers), so listing
is instant. A run's status comes from what `run_recipe` and the training loop leave behind:

- ``finished``: ``metrics.json`` is written (the last step of a run, after the final evaluation);
- ``resumable``: no ``metrics.json`` but a complete checkpoint (``checkpoints/latest`` names a
  ``step-N`` folder holding ``trainer_state.json``); ``nlpipe run recipe ... --resume`` continues it;
- ``interrupted``: the run started (``recipe.yaml``) but left neither.

Folders that are not run folders are looked into (a few levels) for run folders; run folders whose
files cannot be read are skipped with a note naming the file, never a traceback.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import NlpipeError

MISSING = "–"
_MAX_DEPTH = 3
_NOT_RUNS = {"checkpoints", "logs"}  # folders inside a run folder


@dataclass
class RunEntry:
    """One run folder as `nlpipe runs` shows it."""

    run_dir: Path
    status: str
    """finished | resumable | interrupted"""
    task: str = MISSING
    model: str = MISSING
    data: str = MISSING
    metric: str = ""
    score: float | None = None
    score_split: str = ""
    """Where the score comes from: test, validation, or best validation so far (unfinished runs)."""
    steps: int | None = None
    train_seconds: float | None = None
    modified: float = 0.0
    """Last change to the folder's files (seconds since the epoch)."""
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class Listing:
    """Runs found under a folder, and the folders skipped (with why)."""

    runs: list[RunEntry]
    notes: list[str]


class _Malformed(Exception):
    """A file of a run folder cannot be read; the message names it."""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise _Malformed(f"{path}: cannot read ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise _Malformed(f"{path}: line {exc.lineno}: not valid JSON") from exc
    if not isinstance(value, dict):
        raise _Malformed(f"{path}: expected a JSON object")
    return value


def _read_recipe(path: Path) -> dict[str, Any]:
    import yaml

    try:
        value = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise _Malformed(f"{path}: not readable YAML") from exc
    if not isinstance(value, dict):
        raise _Malformed(f"{path}: expected a mapping")
    return value


def is_run_folder(path: Path) -> bool:
    """Whether `path` looks like a folder `nlpipe run recipe` wrote (finished or not)."""
    return any((path / name).exists() for name in ("recipe.yaml", "metrics.json", "checkpoints"))


def latest_checkpoint_state(run_dir: Path) -> dict[str, Any] | None:
    """``trainer_state.json`` of the checkpoint ``--resume`` would continue from, or None.

    The same rule as the training loop's (`nlpipe.training.checkpoint_files.find_resumable`: the newest
    intact checkpoint), read without importing torch.
    """
    from .training.checkpoint_files import find_resumable

    found, _ = find_resumable(run_dir / "checkpoints")
    return _read_json(found / "trainer_state.json") if found is not None else None


def _data_label(info: dict[str, Any], metrics: dict[str, Any]) -> str:
    data = info.get("data") or metrics.get("data")
    if isinstance(data, dict):
        source = str(data.get("source", MISSING))
        return f"dir {data['data_dir']}" if source == "dir" and data.get("data_dir") else source
    return str(data) if data else MISSING


def _modified(run_dir: Path) -> float:
    times = [p.stat().st_mtime for p in run_dir.iterdir() if p.name in
             ("metrics.json", "train_log.jsonl", "recipe.yaml", "checkpoints", "run_info.json")]
    return max(times, default=run_dir.stat().st_mtime)


def read_run(run_dir: str | Path) -> RunEntry:
    """Summarize one run folder.

    Raises:
        NlpipeError: not a run folder, or one of its files cannot be read (the message names it).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise NlpipeError(f"{run_dir}: no such run folder; `nlpipe runs` lists them")
    if not is_run_folder(run_dir):
        raise NlpipeError(f"{run_dir}: not a run folder (no recipe.yaml, metrics.json or checkpoints/)")
    try:
        return _read_run(run_dir)
    except _Malformed as exc:
        raise NlpipeError(f"{exc}; rerun the run or remove the folder") from exc


def _read_run(run_dir: Path) -> RunEntry:
    recipe = _read_recipe(run_dir / "recipe.yaml") if (run_dir / "recipe.yaml").is_file() else {}
    info = _read_json(run_dir / "run_info.json") if (run_dir / "run_info.json").is_file() else {}
    model = recipe.get("model") if isinstance(recipe.get("model"), dict) else {}
    entry = RunEntry(
        run_dir=run_dir, status="interrupted",
        task=str(info.get("task") or recipe.get("task") or MISSING),
        model=str(model.get("type") or MISSING),
        metric=str((recipe.get("eval") or {}).get("metric") or ""),
        modified=_modified(run_dir),
    )
    if (run_dir / "metrics.json").is_file():
        metrics = _read_json(run_dir / "metrics.json")
        entry.status, entry.metrics = "finished", metrics
        entry.metric = str(metrics.get("selection_metric") or entry.metric)
        for split in ("test", "validation"):
            scores = metrics.get(split)
            if isinstance(scores, dict) and isinstance(scores.get(entry.metric), (int, float)):
                entry.score, entry.score_split = float(scores[entry.metric]), split
                break
        train = metrics.get("train") if isinstance(metrics.get("train"), dict) else {}
        entry.steps = train.get("steps")
        entry.train_seconds = train.get("wall_s")
        entry.data = _data_label(info, metrics)
        return entry
    state = latest_checkpoint_state(run_dir)
    if state is not None:
        entry.status = "resumable"
        entry.steps = state.get("global_step")
        entry.train_seconds = state.get("train_seconds")
        best = state.get("best_metric")
        if isinstance(best, (int, float)):
            entry.score, entry.score_split = float(best), "best validation so far"
    entry.data = _data_label(info, {})
    return entry


def list_runs(folder: str | Path = "runs") -> Listing:
    """Every run folder under `folder` (or `folder` itself), newest first; unreadable ones become notes."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NlpipeError(f"{folder}: no such folder; run a recipe first (`nlpipe run recipe NAME`) or give a folder")
    runs: list[RunEntry] = []
    notes: list[str] = []

    def visit(path: Path, depth: int) -> None:
        if is_run_folder(path):
            try:
                runs.append(_read_run(path))
            except (_Malformed, OSError) as exc:
                notes.append(f"skipped {path}: {exc}")
            return
        if depth >= _MAX_DEPTH:
            return
        try:
            children = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError as exc:
            notes.append(f"skipped {path}: cannot list it ({exc.strerror})")
            return
        for child in children:
            if child.name not in _NOT_RUNS:
                visit(child, depth + 1)

    visit(folder, 0)
    runs.sort(key=lambda r: r.modified, reverse=True)
    return Listing(runs, notes)


def _duration(seconds: float | None) -> str:
    if not isinstance(seconds, (int, float)):
        return MISSING
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _score(entry: RunEntry) -> str:
    if entry.score is None:
        return MISSING
    where = {"test": "", "validation": " (val)"}.get(entry.score_split, " (val, so far)")
    return f"{entry.metric} {entry.score:.2f}{where}"


def format_listing(listing: Listing) -> str:
    """Aligned table of runs: folder, status, task, model, data, score, training time, steps, last change."""
    header = ("RUN", "STATUS", "TASK", "MODEL", "DATA", "SCORE", "TRAIN TIME", "STEPS", "LAST CHANGE")
    rows = [header]
    for r in listing.runs:
        when = _dt.datetime.fromtimestamp(r.modified).strftime("%Y-%m-%d %H:%M")
        rows.append((str(r.run_dir), r.status, r.task, r.model, r.data, _score(r), _duration(r.train_seconds),
                     MISSING if r.steps is None else str(r.steps), when))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def format_run(entry: RunEntry, curve: Path | None) -> str:
    """A run's status, setup and metrics per split, as text."""
    lines = [f"run:     {entry.run_dir}  ({entry.status})",
             f"task:    {entry.task}   model: {entry.model}   data: {entry.data}"]
    splits = {k: v for k, v in entry.metrics.items() if k not in ("train", "eval_speed") and isinstance(v, dict)}
    names: list[str] = [entry.metric] if entry.metric else []
    for scores in splits.values():
        names += [k for k, v in scores.items() if isinstance(v, (int, float)) and k not in names]
    if splits and names:  # one row per metric, one column per split; the selection metric first
        rows = [("metric", *splits)]
        rows += [(name, *(f"{s[name]:.2f}" if isinstance(s.get(name), (int, float)) else MISSING
                          for s in splits.values())) for name in names]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    train = entry.metrics.get("train")
    if isinstance(train, dict):
        lines.append(f"train:   {train.get('steps', MISSING)} steps, {train.get('epochs', MISSING)} epochs, "
                     f"{_duration(train.get('wall_s'))}, {train.get('tokens_per_s', MISSING)} tokens/s, "
                     f"best step {train.get('best_step', MISSING)}, stopped: {train.get('stopped_because', MISSING)}")
    elif entry.status != "finished":
        lines.append(f"progress: {entry.steps if entry.steps is not None else 0} steps in "
                     f"{_duration(entry.train_seconds)}; score {_score(entry)}")
        if entry.status == "resumable":
            lines.append(f"resume:  nlpipe run recipe {entry.run_dir / 'recipe.yaml'} --output-dir {entry.run_dir} "
                         "--resume")
    lines.append(f"curve:   {curve}" if curve else "curve:   (no training log yet)")
    return "\n".join(lines)


def write_curve(entry: RunEntry) -> Path | None:
    """The run's learning curve (training loss, validation metric): its ``training_curve.png``, the picture
    the model card shows, drawn from ``train_log.jsonl`` when missing or older than the log (an unfinished
    run). None when there is no log yet."""
    from .model_card import plot_training_curve

    log = entry.run_dir / "train_log.jsonl"
    if not log.is_file():
        return None
    path = entry.run_dir / "training_curve.png"
    if path.is_file() and path.stat().st_mtime >= log.stat().st_mtime:
        return path
    try:
        return plot_training_curve(entry.run_dir, entry.metric)
    except (ValueError, KeyError, TypeError) as exc:
        raise NlpipeError(f"{log}: cannot be drawn ({exc}); the log is malformed") from exc
