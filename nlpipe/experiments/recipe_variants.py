"""Variants of the NER recipe trained the same way: GRU vs LSTM, and unidirectional vs bidirectional.

Each variant is a normal ``nlpipe run recipe ner-bilstm`` run (the one training loop) with overrides;
the rows come from the run folders through `nlpipe.compare.load_run_summary`, so they are the same
numbers ``nlpipe compare`` would show. Data: the built-in sample, or a CoNLL-2003 slice with
``--data-dir``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .. import progress
from .reporting import ExperimentResult, finish, pyplot, save_figure

RECIPE = "ner-bilstm"


def _common(quick: bool, data_dir: Any) -> list[str]:
    if quick:
        return ["train.max_steps=3", "train.eval_every_steps=3", "data.max_train_examples=32",
                "data.max_eval_examples=16", "model.hidden_size=16", "model.embedding_dim=8", "train.batch_size=8"]
    slice_ = ["data.max_train_examples=3000", "data.max_eval_examples=1000"] if data_dir else []
    return [*slice_, "train.max_epochs=4", "model.hidden_size=128", "model.embedding_dim=50", "model.dropout=0.2",
            "model.embedding_dropout=0.2", "train.learning_rate=0.005", "train.early_stopping_patience=null"]


def _run_variants(name: str, variants: dict[str, list[str]], out: Path, quick: bool, data_dir: Any
                  ) -> ExperimentResult:
    from ..compare import load_run_summary
    from ..run import run_recipe

    rows = []
    for number, (label, overrides) in enumerate(variants.items(), 1):
        run_dir = out / "runs" / label.replace(" ", "-")
        print(f"{name}: variant {number}/{len(variants)}: {label}", file=sys.stderr)
        run_recipe(RECIPE, [*_common(quick, data_dir), *overrides], data=None if data_dir else "sample",
                   data_dir=data_dir, output_dir=run_dir, overwrite=True, progress=progress.enabled())
        summary = load_run_summary(run_dir)
        rows.append({"variant": label, "parameters": summary.parameters, "tokens/s": summary.tokens_per_s,
                     "train wall s": summary.wall_s, f"test {summary.metric}": summary.score})
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.4), dpi=90)
    labels = [row["variant"] for row in rows]
    metric_key = list(rows[0])[-1]
    for ax, key in zip(axes, ("parameters", "tokens/s", metric_key), strict=True):
        ax.bar(labels, [row[key] or 0 for row in rows], color=["tab:blue", "tab:orange", "tab:green"][: len(rows)])
        ax.set_title(key, fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"{name} on {'a CoNLL-2003 slice' if data_dir else 'the built-in NER sample'}", fontsize=10)
    figure = save_figure(fig, out / "figure.png")
    settings = (f"Recipe {RECIPE} with overrides {' '.join(_common(quick, data_dir))}; data "
                f"{'CoNLL-2003 slice from ' + str(data_dir) if data_dir else 'built-in sample'}")
    return finish(name, rows, out, figure, settings)


def run_gru_vs_lstm(out: Path, *, quick: bool = False, data_dir: Any = None) -> ExperimentResult:
    """BiGRU vs BiLSTM tagger: parameters, tokens/s and F1 with everything else equal."""
    variants = {"bilstm": ["model.cell=lstm"], "bigru": ["model.cell=gru"]}
    return _run_variants("gru-vs-lstm", variants, out, quick, data_dir)


def run_bidirectional(out: Path, *, quick: bool = False, data_dir: Any = None) -> ExperimentResult:
    """Unidirectional vs bidirectional LSTM tagger on NER."""
    variants = {"lstm uni": ["model.bidirectional=false"], "lstm bi": ["model.bidirectional=true"]}
    return _run_variants("bidirectional", variants, out, quick, data_dir)
