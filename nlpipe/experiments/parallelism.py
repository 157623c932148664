"""Training throughput vs sequence length: a Transformer encoder vs an LSTM of similar size.

The claim: a Transformer processes all positions of a sequence at once while an RNN steps through
them, so the Transformer trains faster per token on parallel hardware — until attention's T²
cost dominates. Here: tokens/s of full training steps (forward, backward, Adam) on random token
sequences, batch 16, on whatever device is present (CPU on the 2-core machine).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import progress
from .reporting import ExperimentResult, finish, hardware, pyplot, save_figure

VOCAB = 1000


class _LstmTagger(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, hidden)
        self.rnn = nn.LSTM(hidden, hidden, num_layers=2, batch_first=True)
        self.out = nn.Linear(hidden, VOCAB)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.rnn(self.embedding(input_ids))[0])  # (B, T, V)


class _TransformerTagger(nn.Module):
    def __init__(self, hidden: int, max_length: int):
        super().__init__()
        from transformers import BertConfig, BertModel

        config = BertConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=hidden * 4, max_position_embeddings=max_length)
        self.encoder = BertModel(config, add_pooling_layer=False)
        self.out = nn.Linear(hidden, VOCAB)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.encoder(input_ids=input_ids).last_hidden_state)  # (B, T, V)


def tokens_per_second(model: nn.Module, length: int, batch_size: int, steps: int, device: str) -> float:
    """Training tokens/s over `steps` timed steps after one warm-up step."""
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    inputs = torch.randint(0, VOCAB, (batch_size, length), device=device)
    labels = torch.randint(0, VOCAB, (batch_size, length), device=device)

    def step() -> None:
        loss = nn.functional.cross_entropy(model(inputs).reshape(-1, VOCAB), labels.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return batch_size * length * steps / (time.perf_counter() - started)


def run(out: Path, *, quick: bool = False, data_dir: Any = None) -> ExperimentResult:
    """tokens/s for LSTM and Transformer at several sequence lengths."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    lengths = [8, 16] if quick else [16, 32, 64, 128, 256, 512]
    hidden, batch_size, steps = (32, 4, 1) if quick else (128, 16, 5)
    rows = []
    for name in ("lstm", "transformer"):
        torch.manual_seed(0)
        model = _LstmTagger(hidden) if name == "lstm" else _TransformerTagger(hidden, max(lengths))
        row: dict[str, Any] = {"model": name, "parameters": sum(p.numel() for p in model.parameters())}
        for length in progress.bar(lengths, f"parallelism: {name}"):
            row[f"T={length}"] = tokens_per_second(model, length, batch_size, steps, device)
        rows.append(row)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=90)
    for row in rows:
        ax.plot(lengths, [row[f"T={n}"] for n in lengths], marker="o", label=f"{row['model']} ({row['parameters']:,} params)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sequence length")
    ax.set_ylabel("training tokens/s")
    ax.set_title(f"training throughput on {hardware()}", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    figure = save_figure(fig, out / "figure.png")
    settings = (f"Random tokens (vocab {VOCAB}), batch {batch_size}, hidden {hidden}, 2 layers each, "
                f"{steps} timed steps after a warm-up; tokens/s (higher is better)")
    return finish("parallelism", rows, out, figure, settings)
