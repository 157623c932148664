"""Vanishing gradients: how much the loss at the end reacts to the input embedding t steps earlier.

The task is "repeat the first symbol" read through T steps; we take the gradient of the loss w.r.t.
each position's input embedding and report its norm (mean over a batch) as a function of the
distance from the end — for untrained models and after a short training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import progress
from .reporting import ExperimentResult, finish, pyplot, save_figure
from .synthetic_models import RecurrentClassifier

NUM_SYMBOLS = 10


def _batch(generator: torch.Generator, batch_size: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    symbols = torch.randint(0, NUM_SYMBOLS, (batch_size, length), generator=generator)
    return symbols, symbols[:, 0]


def gradient_norms(model: RecurrentClassifier, inputs: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """‖∂loss/∂x_t‖ for every position t (mean over the batch), x_t the input embedding."""
    embedded = model.embedding(inputs).detach().requires_grad_(True)  # (B, T, E)
    loss = nn.functional.cross_entropy(model.forward_embeddings(embedded), labels)
    (grad,) = torch.autograd.grad(loss, embedded)
    return grad.norm(dim=-1).mean(dim=0).tolist()  # (T,)


def run(out: Path, *, quick: bool = False, data_dir: Any = None) -> ExperimentResult:
    """Gradient norm vs position for RNN/LSTM/GRU, untrained and briefly trained."""
    length, steps = (12, 5) if quick else (60, 300)
    rows, curves = [], {}
    for cell in ("rnn", "lstm", "gru"):
        torch.manual_seed(0)
        generator = torch.Generator().manual_seed(0)
        model = RecurrentClassifier(cell, NUM_SYMBOLS, NUM_SYMBOLS)
        probe = _batch(torch.Generator().manual_seed(123), 64, length)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        for state in ("untrained", "trained"):
            if state == "trained":
                for _ in progress.bar(range(steps), f"vanishing-gradients: {cell}"):
                    inputs, labels = _batch(generator, 64, length)
                    loss = nn.functional.cross_entropy(model(inputs), labels)
                    optimizer.zero_grad()
                    loss.backward()
                    nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                    optimizer.step()
            norms = gradient_norms(model, *probe)
            curves[(cell, state)] = norms
            last = norms[-1]
            rows.append({
                "cell": cell, "state": state, "‖g‖ last step": last,
                f"‖g‖ {length // 2} back": norms[length - 1 - length // 2],
                f"‖g‖ first ({length - 1} back)": norms[0],
                "first / last": norms[0] / last if last else float("nan"),
            })
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), dpi=90, sharey=True)
    for ax, state in zip(axes, ("untrained", "trained"), strict=True):
        for cell in ("rnn", "lstm", "gru"):
            norms = curves[(cell, state)]
            ax.plot(range(length - 1, -1, -1), norms, label=cell)
        ax.set_yscale("log")
        ax.set_xlabel("steps before the end")
        ax.set_title(f"{state}" + ("" if state == "untrained" else f" ({steps} steps)"))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("‖∂loss/∂x_t‖ (mean over batch)")
    axes[0].legend(fontsize=8)
    figure = save_figure(fig, out / "figure.png")
    settings = (f"Task: predict the first of {length} random symbols from the last state; hidden 64, embeddings 32; "
                f"trained {steps} Adam steps (lr 3e-3, batch 64)")
    return finish("vanishing-gradients", rows, out, figure, settings)
