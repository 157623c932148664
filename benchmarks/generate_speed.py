"""generate() with the carried recurrent state vs re-running the whole prefix at every step.

    python benchmarks/generate_speed.py [--run-dir RUN] [--new-tokens 256] [--repeats 3] [--no-record]

Same model, same prompt, greedy decoding of exactly `--new-tokens` tokens, both ways:
``use_cache=True`` feeds only the newest token with the carried state (O(1) per token);
``use_cache=False`` recomputes the full prefix at each step (O(length) per token). The token ids
must agree (checked). The model is a run folder's (``--run-dir``) or, by default, a freshly
initialised model of the ``generation-lstm`` recipe's size (2x650 LSTM, 10k vocabulary: speed does
not depend on the weights). Appends the ratio to BENCHMARKS.md (section "## Language modelling")
and one JSON line with metric ``generate_speedup_vs_recompute`` to benchmarks/results.jsonl.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results.jsonl"
TABLE = ROOT / "BENCHMARKS.md"
SECTION = "## Language modelling"


def build_model(run_dir: str | None):
    """The model to time: a run folder's, or a fresh one with the generation-lstm recipe's settings."""
    import nlpipe  # noqa: F401  (registers the Auto classes)
    from nlpipe.model_registry import build_model as build_from_registry
    from nlpipe.recipe import load_recipe

    if run_dir:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(run_dir).eval(), f"run {run_dir}"
    recipe = load_recipe("generation-lstm")
    settings = dict(recipe.model)
    model_type = settings.pop("type")
    model = build_from_registry(model_type, settings, vocab_size=10001, pad_token_id=0, eos_token_id=2,
                                bos_token_id=2)
    return model.eval(), "generation-lstm size, fresh weights"


def time_generate(model, prompt, new_tokens: int, use_cache: bool, repeats: int):
    """Best-of-`repeats` wall time of one greedy generate() call, and its output ids."""
    import torch

    times, out = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                 max_new_tokens=new_tokens, min_new_tokens=new_tokens, use_cache=use_cache,
                                 pad_token_id=0)
        times.append(time.perf_counter() - started)
    return min(times), statistics.median(times), out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to the result files")
    args = parser.parse_args(argv)

    import torch

    from nlpipe.run import count_parameters, git_commit, machine_description

    model, what = build_model(args.run_dir)
    prompt = torch.randint(3, model.config.vocab_size, (1, args.prompt_tokens),
                           generator=torch.Generator().manual_seed(0))
    time_generate(model, prompt, 8, True, 1)  # warm-up (kernel selection, allocator)
    cached_s, cached_med, cached = time_generate(model, prompt, args.new_tokens, True, args.repeats)
    full_s, full_med, full = time_generate(model, prompt, args.new_tokens, False, args.repeats)
    if cached.tolist() != full.tolist():
        print("error: cached and recomputed generation disagree", file=sys.stderr)
        return 1
    speedup = full_s / cached_s
    command = "python benchmarks/generate_speed.py" + (f" --run-dir {args.run_dir}" if args.run_dir else "")
    summary = {
        "metric": "generate_speedup_vs_recompute", "value": round(speedup, 2), "model": what,
        "parameters": count_parameters(model), "new_tokens": args.new_tokens, "prompt_tokens": args.prompt_tokens,
        "cached_s": round(cached_s, 3), "recompute_s": round(full_s, 3),
        "cached_tokens_per_s": round(args.new_tokens / cached_s, 1),
        "cached_median_s": round(cached_med, 3), "recompute_median_s": round(full_med, 3),
        "device": machine_description(), "commit": git_commit(),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"), "command": command,
    }
    print(json.dumps(summary))
    if args.no_record:
        return 0
    with open(RESULTS, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"recipe": "generation-lstm", "dataset": None, "split": None, **summary}) + "\n")
    line = (
        f"- {summary['date']}: generate() speed, {what} ({summary['parameters']:,} parameters), greedy, "
        f"{args.prompt_tokens}-token prompt + {args.new_tokens} new tokens, best of {args.repeats}: carried state "
        f"{cached_s:.2f} s ({summary['cached_tokens_per_s']:.0f} tokens/s) vs full-prefix recomputation "
        f"{full_s:.2f} s → **{speedup:.1f}× faster**, identical tokens. {summary['device']}, commit "
        f"{summary['commit']}. `{command}`\n"
    )
    text = TABLE.read_text(encoding="utf-8") if TABLE.exists() else ""
    if SECTION not in text:
        text = text.rstrip("\n") + f"\n\n{SECTION}\n\n"
    head, _, tail = text.partition(SECTION)
    # Insert at the end of the section (before the next "## " heading, if any).
    body, sep, rest = tail.partition("\n## ")
    body = body.rstrip("\n") + "\n" + line
    TABLE.write_text(head + SECTION + body + ("\n" + sep.lstrip("\n") + rest if sep else ""), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
