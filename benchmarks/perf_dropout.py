"""A/B of the recurrent families' dropout: `F.dropout` (bernoulli_ mask) vs `uniform_mask_dropout`, CPU time.

    python benchmarks/perf_dropout.py ner-bilstm 150    # recipe, steps (translation-lstm-luong 40, generation-lstm 30)

Both variants train the same model on the same pre-collated batches (`perf_overhead.run_raw`, the recipe's own
precision), one thread, three interleaved rounds; CPU time, so the ratio holds on a busy machine.
"""

from __future__ import annotations

import importlib
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perf_overhead import ROOT, fixed_steps_overrides, prepare, raw_batches, run_raw  # noqa: E402

FAMILIES = ("rnn_tagger", "rnn_lm", "rnn_seq2seq")
"""The model types whose modeling file defines `uniform_mask_dropout`."""


def main(argv: list[str]) -> int:
    torch.set_num_threads(1)
    import nlpipe  # noqa: F401

    name, steps = argv[0], int(argv[1]) if len(argv) > 1 else 100
    recipe, _, task, tokenizer, encoded = prepare(name, fixed_steps_overrides(steps), str(ROOT.parent / "shared" / "data"))
    family = recipe.model.get("type")
    if family not in FAMILIES:
        raise SystemExit(f"error: {name} is a {family} recipe; this A/B is for {', '.join(FAMILIES)}")
    batches = raw_batches(recipe, task, encoded, steps)
    module = importlib.import_module(f"nlpipe.models.{family}.modeling_{family}")
    fast = module.uniform_mask_dropout

    def bernoulli(hidden: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
        return F.dropout(hidden, rate, training=True) if training and rate else hidden

    seconds: dict[str, list[float]] = {"F.dropout": [], "uniform mask": []}
    variants = [("F.dropout", bernoulli), ("uniform mask", fast)]
    for round_ in range(3):
        for label, function in variants if round_ % 2 == 0 else variants[::-1]:
            module.uniform_mask_dropout = function
            started = time.process_time()
            run_raw(recipe, task, tokenizer, batches)
            seconds[label].append(time.process_time() - started)
    module.uniform_mask_dropout = fast
    old, new = statistics.median(seconds["F.dropout"]), statistics.median(seconds["uniform mask"])
    print(f"{name}: {steps} steps, CPU seconds (median of 3) F.dropout {old:.2f}, uniform mask {new:.2f}: "
          f"{old / new:.3f}x; rounds {seconds}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
