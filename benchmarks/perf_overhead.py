"""nlpipe's full training loop vs a minimal raw-PyTorch loop of the same model on the same batches.

    python benchmarks/perf_overhead.py ner-bilstm [--steps 200] [--rounds 3] [--record]

Both sides train the same model class (same seed, same initial weights) on the same length-bucketed
batches (epoch 0 of the recipe's `LengthBucketBatchSampler`), with the same optimizer, learning rate and
gradient clipping:

- ``nlpipe``: `nlpipe.training.loop.train` as `run_recipe` calls it (Accelerate, DataLoader collating
  HF-datasets rows, scheduler, NaN check, logging, TensorBoard, final checkpoint), stopped by
  ``train.max_steps``; its tokens/s is the one nlpipe reports (training steps only: evaluations and the checkpoints
  written with them are pauses, as the raw loop has none).
- ``raw``: a hand-written loop over batches collated *before* the clock starts (the strictest limit:
  no data loading at all; the same fused Adam as nlpipe) — forward, loss, backward, clip, step, zero_grad.
- ``raw-unfused``: the same with a plain ``torch.optim.Adam(params, lr)`` as most hand-written loops have it.
  A recurrent LM's raw loop carries its detached state from window to window (truncated BPTT), as
  nlpipe's causal-LM task does.
- ``raw-padded`` (taggers only): the raw loop with the recurrent encoder run on the padded batch
  without ``pack_padded_sequence`` — what packing costs (not exact for the backward direction
  when lengths differ; shown only as a bound).

The machine is shared, so the three run interleaved in rounds (A B C, B C A, ...) and the ratio is
taken from the medians; the load average before and after is printed and recorded. ``--clock cpu
--threads 1`` times both sides in process CPU time instead of wall time: other jobs on the cores then
move the ratio far less (they still share caches and memory bandwidth).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_log import ROOT, append_results  # noqa: E402


def prepare(recipe_name: str, overrides: list[str], data_dir: str):
    """Load recipe, data, tokenizer and encoded splits exactly as `run_recipe` does.

    A bad recipe name, override or data folder ends the benchmark with nlpipe's one-line message (every script
    here that times a recipe starts with this)."""
    from nlpipe.errors import NlpipeError

    try:
        return _prepare(recipe_name, overrides, data_dir)
    except NlpipeError as exc:
        raise SystemExit(f"error: {exc}") from None


def _prepare(recipe_name: str, overrides: list[str], data_dir: str):
    from nlpipe.data.catalog import load_data
    from nlpipe.recipe import load_recipe
    from nlpipe.tasks import get_task
    from nlpipe.tokenizer_training import load_spec, train_tokenizer

    recipe = load_recipe(recipe_name, overrides)
    data = load_data(recipe.data.dataset, source=None, data_dir=data_dir, seed=recipe.train.seed,
                     max_train_examples=recipe.data.max_train_examples,
                     max_eval_examples=recipe.data.max_eval_examples)
    task = get_task(recipe)
    task.setup(data, recipe.data.dataset)
    spec = load_spec(recipe.tokenizer["spec"], {k: v for k, v in recipe.tokenizer.items() if k != "spec"},
                     recipe.source)
    tokenizer = train_tokenizer(spec, task.tokenizer_texts(data["train"]))
    task.bind_tokenizer(tokenizer)
    encoded = {split: task.encode(data[split], tokenizer, split) for split in data}
    return recipe, data, task, tokenizer, encoded


def fixed_steps_overrides(steps: int) -> list[str]:
    """Recipe overrides for a timing run: exactly `steps` optimizer steps, constant LR, one small closing eval."""
    return [f"train.max_steps={steps}", "train.max_epochs=1000", "train.eval_every_steps=0",
            "train.early_stopping_patience=null", "train.lr_scheduler=constant", "train.warmup_steps=0",
            "data.max_eval_examples=64", "train.log_every_steps=25"]


def fresh_model(task, tokenizer, seed: int) -> torch.nn.Module:
    from accelerate.utils import set_seed

    set_seed(seed)
    return task.build_model(tokenizer)


def run_nlpipe(recipe, data, task, tokenizer, encoded) -> dict:
    """One `train()` call of `recipe.train.max_steps` steps; tokens/s as nlpipe reports it."""
    from nlpipe.run import make_accelerator
    from nlpipe.training.loop import train

    model = fresh_model(task, tokenizer, recipe.train.seed)
    with tempfile.TemporaryDirectory(prefix="perf-overhead-") as tmp:
        run_dir = Path(tmp)
        accelerator = make_accelerator(recipe, run_dir)
        result = train(task, model, encoded, data, recipe, run_dir, accelerator, progress=False)
        accelerator.end_training()
        # Steady state: the loop's own per-window figures, without the first window (start-up) and
        # without the closing evaluation, checkpoint and best-model reload.
        windows = [r["tokens_per_s"] for r in (json.loads(x) for x in (run_dir / "train_log.jsonl").open())
                   if "tokens_per_s" in r][1:]
    return {"tokens": result.train_tokens, "tokens_per_s": result.tokens_per_s, "steps": result.global_step,
            "steady_tokens_per_s": statistics.median(windows) if windows else None}


def raw_batches(recipe, task, encoded, steps: int) -> list[dict[str, torch.Tensor]]:
    """The first `steps` batches nlpipe trains on, collated up front."""
    from nlpipe.training.batching import LengthBucketBatchSampler

    if recipe.task == "causal-lm":  # truncated-BPTT windows in stream order (the task's own loader)
        loader, sampler = task.train_loader(encoded["train"], recipe)
        sampler.set_epoch(0)
        return [batch for batch, _ in zip(loader, range(steps), strict=False)]
    t = recipe.train
    sampler = LengthBucketBatchSampler(encoded["train"]["length"], t.batch_size, batch_tokens=t.batch_tokens,
                                       seed=t.seed, bucket=t.bucket_by_length)
    indices = list(sampler)[:steps]
    rows = encoded["train"]
    return [task.collate([rows[i] for i in batch]) for batch in indices]


def run_raw(recipe, task, tokenizer, batches, *, padded: bool = False, fused: bool = True) -> dict:
    """A minimal hand-written loop over pre-collated batches (``fused``: the Adam kernel nlpipe uses)."""
    model = fresh_model(task, tokenizer, recipe.train.seed)
    if padded:  # bypass packing: plain padded (B, T, E) → (B, T, D*H)
        model.encode = lambda embeds, mask: model.encoder(embeds)[0]
    t = recipe.train
    optimizer = torch.optim.Adam(model.parameters(), lr=t.learning_rate, fused=fused or None)
    model.train()
    language_model = "target_ids" in batches[0]
    # Counted as nlpipe counts them (source + target tokens for seq2seq), outside the timed loop.
    tokens = sum(task.count_tokens(b) for b in batches)
    state = None  # a recurrent LM's state, carried (detached) from window to window: truncated BPTT
    # The recipe's own precision (``auto`` is bf16 autocast on a CPU with bf16 units), as nlpipe's Accelerate runs it,
    # so that the ratio measures the loop and not the arithmetic.
    from nlpipe.run import resolve_mixed_precision

    bf16 = resolve_mixed_precision(t.mixed_precision, True) == "bf16"
    start = time.perf_counter()
    for batch in batches:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            if language_model:
                out = model(input_ids=batch["input_ids"], cache=state, use_cache=True)
                state = None if out.cache is None else tuple(s.detach() for s in out.cache) \
                    if isinstance(out.cache, tuple) else out.cache.detach()
                logits = out.logits
                loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)),
                                                         batch["target_ids"].reshape(-1))
            else:  # the model's loss, or the smoothed one a recipe asks for (train.label_smoothing)
                loss = task.loss(model, batch)
        loss.backward()
        if t.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    elapsed = time.perf_counter() - start
    return {"tokens": tokens, "tokens_per_s": tokens / elapsed, "steps": len(batches)}


def uniform_fraction(batches: list[dict[str, torch.Tensor]]) -> float:
    """Share of batches whose rows all have the same length (packing is skipped for those)."""
    if "attention_mask" not in batches[0]:  # LM windows: always full
        return 1.0
    same = sum(bool((b["attention_mask"].sum(1) == b["attention_mask"].size(1)).all()) for b in batches)
    return same / max(1, len(batches))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--record", action="store_true", help="append the ratio to benchmarks/results.jsonl")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for both sides (1 is steadier when other jobs share the cores)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: both sides (and nlpipe's own tokens/s) are timed in this process's CPU time, "
                             "which other jobs on the machine barely move; needs --threads 1")
    args = parser.parse_args(argv)
    if args.clock == "cpu":
        if args.threads != 1:
            parser.error("--clock cpu needs --threads 1 (with more threads CPU time counts OpenMP's spin-waiting)")
        # One clock for everything timed here: the raw loop below and nlpipe's loop read time.perf_counter.
        time.perf_counter = time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)

    import nlpipe  # noqa: F401  (registers the Auto classes)

    load_before = os.getloadavg()
    overrides = [*fixed_steps_overrides(args.steps), *args.overrides]
    recipe, data, task, tokenizer, encoded = prepare(args.recipe, overrides, args.data_dir)
    batches = raw_batches(recipe, task, encoded, args.steps)
    is_tagger = recipe.model.get("type") == "rnn_tagger" and recipe.model.get("bidirectional", False)
    print(f"{args.recipe}: {len(batches)} batches, {uniform_fraction(batches):.0%} with rows of equal length; "
          f"threads {torch.get_num_threads()}; load {load_before}", flush=True)

    kinds = ["nlpipe", "raw", "raw-unfused"] + (["raw-padded"] if is_tagger else [])
    results: dict[str, list[float]] = {k: [] for k in kinds}
    steady_runs: list[float] = []  # nlpipe's log windows after the first: no start-up, no closing checkpoint
    run_raw(recipe, task, tokenizer, batches[:10])  # warm-up (allocator, lazy init)
    started = time.perf_counter()
    for r in range(args.rounds):
        order = kinds[r % len(kinds):] + kinds[: r % len(kinds)]
        for kind in order:
            if kind == "nlpipe":
                out = run_nlpipe(recipe, data, task, tokenizer, encoded)
            else:
                out = run_raw(recipe, task, tokenizer, batches, padded=kind == "raw-padded",
                              fused=kind != "raw-unfused")
            results[kind].append(out["tokens_per_s"])
            if out.get("steady_tokens_per_s"):
                steady_runs.append(out["steady_tokens_per_s"])
            steady = f", steady-state windows {out['steady_tokens_per_s']:.0f}" if out.get("steady_tokens_per_s") else ""
            print(f"  round {r + 1} {kind:>11}: {out['tokens_per_s']:8.0f} tok/s ({out['steps']} steps{steady})",
                  flush=True)
    wall = time.perf_counter() - started
    load_after = os.getloadavg()
    med = {k: statistics.median(v) for k, v in results.items()}
    ratio = med["nlpipe"] / med["raw"]
    paired = [a / b for a, b in zip(results["nlpipe"], results["raw"], strict=True)]
    print("per-round nlpipe/raw: " + ", ".join(f"{x:.2f}" for x in paired))
    steady_ratio = statistics.median(steady_runs) / med["raw"] if steady_runs else None
    if steady_ratio:
        print(f"steady-state (log windows after the first) / raw = {steady_ratio:.3f}")
    print("median tok/s: " + ", ".join(f"{k} {v:.0f}" for k, v in med.items()))
    print(f"throughput_ratio_vs_raw_pytorch = {ratio:.3f}"
          + (f"; packing cost: raw / raw-padded = {med['raw'] / med['raw-padded']:.3f}" if is_tagger else ""))
    print(f"load before {load_before[0]:.1f}, after {load_after[0]:.1f}; {args.clock} clock {wall:.0f} s")
    if args.record:
        append_results([{
            "recipe": args.recipe, "dataset": recipe.data.dataset, "split": "train",
            "metric": "throughput_ratio_vs_raw_pytorch", "value": round(ratio, 3), "wall_s": round(wall, 1),
            "tokens_per_s": round(med["nlpipe"], 1), "reference_tokens_per_s": round(med["raw"], 1),
            "raw_unfused_adam_tokens_per_s": round(med["raw-unfused"], 1),
            **({"raw_padded_tokens_per_s": round(med["raw-padded"], 1)} if is_tagger else {}),
            "per_round_ratios": [round(x, 3) for x in paired],
            "steady_state_ratio": None if steady_ratio is None else round(steady_ratio, 3),
            "uniform_length_batches": round(uniform_fraction(batches), 3), "steps": args.steps, "rounds": args.rounds,
            "threads": torch.get_num_threads(), "clock": args.clock, "load_before": round(load_before[0], 1),
            "load_after": round(load_after[0], 1),
        }])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
