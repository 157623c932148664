"""Where one training step of a recipe spends its time: cProfile over nlpipe's loop for N steps.

    python benchmarks/perf_profile.py ner-bilstm [--steps 150] [--threads 1] [--top 35]

Prints the functions with the most cumulative and own time, so per-batch Python overhead (data loading,
collate, Accelerate wrappers, logging) can be told apart from the model's forward/backward.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perf_overhead import ROOT, prepare, run_nlpipe  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--top", type=int, default=35)
    parser.add_argument("--dump", default=None, help="also write the raw profile here (for pstats/snakeviz)")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import nlpipe  # noqa: F401

    overrides = [f"train.max_steps={args.steps}", "train.max_epochs=1000", "train.eval_every_steps=0",
                 "train.early_stopping_patience=null", "data.max_eval_examples=64", *args.overrides]
    recipe, data, task, tokenizer, encoded = prepare(args.recipe, overrides, args.data_dir)
    profiler = cProfile.Profile()
    profiler.enable()
    out = run_nlpipe(recipe, data, task, tokenizer, encoded)
    profiler.disable()
    print(out)
    if args.dump:
        profiler.dump_stats(args.dump)
    stats = pstats.Stats(profiler).strip_dirs()
    stats.sort_stats("cumulative").print_stats(args.top)
    stats.sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
