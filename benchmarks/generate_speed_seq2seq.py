"""`generate()` speed of the translation models: tokens/s greedy and with beam 5, and the carried-state speed-up.

    python benchmarks/generate_speed_seq2seq.py [--recipes translation-gru-attn translation-transformer]
                                                [--batch-size 32] [--source-length 20] [--new-tokens 32]
                                                [--threads 1] [--record]

Each recipe's model is built fresh (speed does not depend on the weights) with an 8k vocabulary, and decodes a
batch of random source sentences of ``--source-length`` tokens for exactly ``--new-tokens`` new tokens
(``min_new_tokens = max_new_tokens``, so both sides do the same work whatever the weights say):

- greedy with the cache (the RNN decoder's carried state, the Transformer's key/value cache) and without it
  (``use_cache=False``: the decoder re-reads the whole target prefix at every step); the token ids must agree;
- beam search with 5 beams (cache on), new tokens/s counted per input sentence.

Appends ``generate_tokens_per_s`` (greedy and beam) and ``generate_speedup_vs_recompute`` lines to
benchmarks/results.jsonl with ``--record``.
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

VOCAB = 8000


def build(recipe_name: str) -> torch.nn.Module:
    from nlpipe.model_registry import build_model
    from nlpipe.recipe import load_recipe

    recipe = load_recipe(recipe_name, [])
    settings = dict(recipe.model)
    model_type = settings.pop("type")
    extra = {"decoder_start_token_id": 0, "max_position_embeddings": 256} if model_type == "marian" else {}
    torch.manual_seed(0)
    return build_model(model_type, settings, vocab_size=VOCAB, pad_token_id=0, eos_token_id=1, **extra).eval()


def timed_generate(model, inputs: torch.Tensor, new_tokens: int, repeats: int, **options) -> tuple[float, torch.Tensor]:
    times, out = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids=inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=new_tokens,
                                 min_new_tokens=new_tokens, do_sample=False, **options)
        times.append(time.perf_counter() - started)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=["translation-gru-attn", "translation-transformer"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--source-length", type=int, default=20)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import nlpipe  # noqa: F401

    inputs = torch.randint(2, VOCAB, (args.batch_size, args.source_length), generator=torch.Generator().manual_seed(0))
    lines = []
    for name in args.recipes:
        model = build(name)
        timed_generate(model, inputs[:2], 4, 1, num_beams=1)  # warm-up
        cached_s, cached = timed_generate(model, inputs, args.new_tokens, args.repeats, num_beams=1, use_cache=True)
        full_s, full = timed_generate(model, inputs, args.new_tokens, args.repeats, num_beams=1, use_cache=False)
        if cached.tolist() != full.tolist():
            print(f"error: {name}: cached and recomputed greedy decoding disagree", file=sys.stderr)
            return 1
        beam_s, _ = timed_generate(model, inputs, args.new_tokens, args.repeats, num_beams=5, use_cache=True)
        made = args.batch_size * args.new_tokens
        greedy, beam, speedup = made / cached_s, made / beam_s, full_s / cached_s
        print(f"{name}: greedy {greedy:,.0f} new tokens/s (recompute {made / full_s:,.0f}: cache {speedup:.2f}× faster), "
              f"beam 5 {beam:,.0f} new tokens/s; batch {args.batch_size}, source {args.source_length}, "
              f"{args.new_tokens} new tokens, threads {torch.get_num_threads()}", flush=True)
        shared = {"recipe": name, "batch_size": args.batch_size, "source_length": args.source_length,
                  "new_tokens": args.new_tokens, "threads": torch.get_num_threads()}
        lines += [{**shared, "metric": "generate_tokens_per_s", "value": round(greedy, 1), "num_beams": 1},
                  {**shared, "metric": "generate_tokens_per_s", "value": round(beam, 1), "num_beams": 5},
                  {**shared, "metric": "generate_speedup_vs_recompute", "value": round(speedup, 2),
                   "cached_s": round(cached_s, 3), "recompute_s": round(full_s, 3)}]
    if args.record:
        append_results(lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
