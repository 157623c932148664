"""CPU time of nlpipe's per-batch data loading against the CPU time of one raw training step.

    python benchmarks/perf_data_share.py ner-bilstm [--steps 100] [--threads 1] [--record]

Data loading is what the training DataLoader does per batch: fetch the batch's rows from the dataset the
task's training loader reads (its columns, through `nlpipe.training.arrow_rows` where the layout allows) and
``task.collate`` them. The raw step is `perf_overhead.run_raw` (forward, loss, backward, clip, fused Adam) on
the same batches. Both are process CPU time, not wall
time, so the share stays meaningful on a machine loaded by other jobs, where wall-clock ratios from
`perf_overhead.py` swing by ±40 % from round to round. (The whole loop's other per-step work — NaN
check, logging, Accelerate wrappers — measured ≈ 0.4 % of a step in `perf_profile.py`.)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perf_overhead import ROOT, fixed_steps_overrides, prepare, run_raw  # noqa: E402
from results_log import append_results  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--record", action="store_true", help="append the share to benchmarks/results.jsonl")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import nlpipe  # noqa: F401
    from nlpipe.training.batching import LengthBucketBatchSampler

    load_before = os.getloadavg()[0]
    recipe, _, task, tokenizer, encoded = prepare(args.recipe, [*fixed_steps_overrides(args.steps), *args.overrides],
                                                  args.data_dir)
    if recipe.task == "causal-lm":
        raise SystemExit("causal-lm trains on tensor windows of one stream (no per-row collation); nothing to measure")
    t = recipe.train
    sampler = LengthBucketBatchSampler(encoded["train"]["length"], t.batch_size, batch_tokens=t.batch_tokens,
                                       seed=t.seed, bucket=t.bucket_by_length)
    rows = task.train_loader(encoded["train"], recipe)[0].dataset  # the columns the training loader fetches
    indices = list(sampler)[: args.steps]
    loading = []
    for _ in range(args.rounds):
        start = time.process_time()
        batches = [task.collate(rows.__getitems__(batch)) for batch in indices]
        loading.append((time.process_time() - start) / len(indices))
    start = time.process_time()
    run_raw(recipe, task, tokenizer, batches)
    step = (time.process_time() - start) / len(batches)
    load = min(loading)
    print(f"{args.recipe}: data loading {1000 * load:.2f} ms CPU per batch (rounds "
          + ", ".join(f"{1000 * x:.2f}" for x in loading) + f"), raw step {1000 * step:.1f} ms CPU: "
          f"share {load / step:.1%}; threads {args.threads}; load {load_before:.1f}→{os.getloadavg()[0]:.1f}")
    if args.record:
        append_results([{
            "recipe": args.recipe, "dataset": recipe.data.dataset, "split": "train",
            "metric": "data_loading_share_of_raw_step", "value": round(load / step, 4),
            "data_loading_ms_cpu": round(1000 * load, 3), "raw_step_ms_cpu": round(1000 * step, 2),
            "steps": len(indices), "threads": args.threads, "load_before": round(load_before, 1),
            "load_after": round(os.getloadavg()[0], 1),
        }])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
