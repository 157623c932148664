"""Long-range dependency: the answer is the token k steps before the end; accuracy vs k per model family.

Each example is ``k + 4`` random symbols; the label is the symbol at position ``len - 1 - k``. A
recurrent classifier must carry that symbol through k updates of its state; attention can look it
up directly. All models get the same steps, batch size and learning rate; accuracy is on fresh data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import progress
from .reporting import ExperimentResult, finish, pyplot, save_figure
from .synthetic_models import RecurrentClassifier, Seq2SeqClassifier, TransformerClassifier

FIRST_SYMBOL = 3  # ids 0-2 are pad / start / end for the seq2seq model
NUM_SYMBOLS = 10


def make_batch(generator: torch.Generator, batch_size: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids `(B, k + 4)`, class labels `(B,)` = the symbol k steps before the last position)."""
    length = k + 4
    symbols = torch.randint(0, NUM_SYMBOLS, (batch_size, length), generator=generator)
    return symbols + FIRST_SYMBOL, symbols[:, length - 1 - k]


def build(family: str, k: int) -> nn.Module:
    """A fresh model of `family` for sequences of length k + 4."""
    vocab = FIRST_SYMBOL + NUM_SYMBOLS
    if family in ("rnn", "lstm", "gru"):
        return RecurrentClassifier(family, vocab, NUM_SYMBOLS)
    if family == "attention seq2seq":
        return Seq2SeqClassifier(vocab, FIRST_SYMBOL)
    return TransformerClassifier(vocab, NUM_SYMBOLS, max_length=k + 4)


def train_and_score(family: str, k: int, steps: int, batch_size: int, seed: int = 0) -> float:
    """Train `family` on distance `k` for `steps` Adam steps; accuracy (%) on 1,000 fresh examples."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = build(family, k)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in progress.bar(range(steps), f"long-range: {family}, k={k}"):
        inputs, labels = make_batch(generator, batch_size, k)
        loss = nn.functional.cross_entropy(model(inputs), labels)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
    model.eval()
    test_generator = torch.Generator().manual_seed(10_000 + seed)
    with torch.no_grad():
        inputs, labels = make_batch(test_generator, 1000, k)
        return float((model(inputs).argmax(-1) == labels).float().mean()) * 100


FAMILIES = ("rnn", "lstm", "gru", "attention seq2seq", "transformer")


def run(out: Path, *, quick: bool = False, data_dir: Any = None) -> ExperimentResult:
    """Accuracy vs distance k for each family; writes table.md and figure.png into `out`."""
    distances = [2, 4] if quick else [1, 5, 10, 20, 40]
    steps, batch_size = (10, 16) if quick else (400, 64)
    rows = []
    for family in FAMILIES:
        row: dict[str, Any] = {"model": family}
        for k in distances:
            row[f"k={k}"] = train_and_score(family, k, steps, batch_size)
        rows.append(row)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=90)
    for row in rows:
        ax.plot(distances, [row[f"k={k}"] for k in distances], marker="o", label=row["model"])
    ax.axhline(100 / NUM_SYMBOLS, color="grey", linestyle=":", label="chance")
    ax.set_xscale("log")
    ax.set_xlabel("distance k (tokens back from the end)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("long-range dependency")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    figure = save_figure(fig, out / "figure.png")
    settings = (f"Synthetic: {NUM_SYMBOLS} symbols, length k+4, label = symbol k back from the end; "
                f"{steps} Adam steps (lr 3e-3, batch {batch_size}), hidden 64, accuracy on 1,000 fresh examples")
    return finish("long-range", rows, out, figure, settings)
