"""Scaling with work: training tokens/s vs sequence length and vs batch size, and memory vs sequence length,
for a recurrent LM and a GPT-style Transformer of the recipes' sizes.

    python benchmarks/perf_scaling.py [--models generation-gru generation-gpt] [--threads 1] [--record]

Models are built from the recipes (`generation-gru`: 2×256 GRU, tied; `generation-gpt`: 4×256 GPT-2, 4 heads;
`n_positions` raised to the longest length measured) with PTB's vocabulary size, on random token ids.
A step is forward + cross-entropy + backward + AdamW; tokens/s is the median of ``--steps`` timed steps after
one warm-up step. Memory is the *activation memory of one training step*: the bytes of every distinct
tensor autograd saves for the backward pass (``torch.autograd.graph.saved_tensors_hooks``), which is exact
and deterministic on any device; on a GPU the peak allocated memory is printed too.

Sweeps: lengths 32…512 at batch 16, and batch sizes 1…64 at length 128. Prints Markdown tables (the ones in
BENCHMARKS.md) and, with ``--record``, one line per point in benchmarks/results.jsonl (metrics
``train_tokens_per_s`` and ``activation_mib``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_log import append_results  # noqa: E402

PTB_VOCAB = 10001
LENGTHS = [32, 64, 128, 256, 512]
BATCH_SIZES = [1, 4, 16, 64]


def build(recipe_name: str, max_length: int) -> torch.nn.Module:
    """The recipe's model, freshly initialised, with PTB's vocabulary size."""
    from nlpipe.model_registry import build_model
    from nlpipe.recipe import load_recipe

    recipe = load_recipe(recipe_name, [])
    settings = dict(recipe.model)
    model_type = settings.pop("type")
    if model_type == "gpt2":
        settings["n_positions"] = max(settings.get("n_positions", 0), max_length)
    torch.manual_seed(0)
    return build_model(model_type, settings, vocab_size=PTB_VOCAB, pad_token_id=0, eos_token_id=1, bos_token_id=1)


def _step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, inputs: torch.Tensor,
          targets: torch.Tensor) -> None:
    logits = model(input_ids=inputs, use_cache=False).logits
    loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def measure(model: torch.nn.Module, batch_size: int, length: int, steps: int, device: str) -> dict:
    """Training tokens/s and activation memory of one step at (batch_size, length)."""
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    inputs = torch.randint(2, PTB_VOCAB, (batch_size, length), device=device)
    targets = torch.randint(2, PTB_VOCAB, (batch_size, length), device=device)
    _step(model, optimizer, inputs, targets)  # warm-up: allocator, optimizer state

    saved: dict[tuple, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.device.type != "meta":
            storage = tensor.untyped_storage()
            saved[(storage.data_ptr(), tensor.device.type)] = storage.nbytes()
        return tensor

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        _step(model, optimizer, inputs, targets)
    parameter_ptrs = {(p.untyped_storage().data_ptr(), p.device.type) for p in model.parameters()}
    activation = sum(n for key, n in saved.items() if key not in parameter_ptrs)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None

    times = []
    for _ in range(steps):
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        _step(model, optimizer, inputs, targets)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return {"tokens_per_s": batch_size * length / statistics.median(times), "activation_mib": activation / 2**20,
            "peak_mib": None if peak is None else peak / 2**20}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["generation-gru", "generation-gpt"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import nlpipe  # noqa: F401
    from nlpipe.run import machine_description

    points = [(16, n) for n in LENGTHS] + [(b, 128) for b in BATCH_SIZES if b != 16]
    rows: dict[str, dict[tuple[int, int], dict]] = {}
    params: dict[str, int] = {}
    for name in args.models:
        model = build(name, max(LENGTHS))
        params[name] = sum(p.numel() for p in model.parameters())
        rows[name] = {}
        for batch_size, length in points:
            rows[name][(batch_size, length)] = out = measure(model, batch_size, length, args.steps, args.device)
            print(f"{name} batch {batch_size:3d} length {length:4d}: {out['tokens_per_s']:9.0f} tok/s, "
                  f"activations {out['activation_mib']:8.1f} MiB", flush=True)

    def table(title: str, key: str, sweep: list[tuple[int, int]], label: str, fmt: str) -> str:
        head = f"| {title} | " + " | ".join(label.format(b=b, n=n) for b, n in sweep) + " |"
        lines = [head, "|---|" + "---:|" * len(sweep)]
        for name in args.models:
            cells = " | ".join(format(rows[name][p][key], fmt) for p in sweep)
            lines.append(f"| `{name}` ({params[name] / 1e6:.1f} M) | {cells} |")
        return "\n".join(lines)

    by_length = [(16, n) for n in LENGTHS]
    by_batch = [(b, 128) for b in BATCH_SIZES]
    print()
    print(table("train tokens/s, batch 16", "tokens_per_s", by_length, "T={n}", ",.0f"))
    print()
    print(table("train tokens/s, length 128", "tokens_per_s", by_batch, "B={b}", ",.0f"))
    print()
    print(table("activation MiB, batch 16", "activation_mib", by_length, "T={n}", ",.1f"))
    print(f"\n{machine_description()}, device {args.device}")
    if args.record:
        append_results([
            {"recipe": name, "split": "train", "metric": "train_tokens_per_s" if metric == "tokens_per_s" else metric,
             "value": round(out[metric], 1), "batch_size": batch_size, "seq_len": length, "parameters": params[name],
             "threads": torch.get_num_threads(), "device_kind": args.device}
            for name in args.models for (batch_size, length), out in rows[name].items()
            for metric in ("tokens_per_s", "activation_mib")
        ])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
