"""A/B of a recipe's raw training steps in float32 and under bf16 autocast, on this machine's CPU.

    python benchmarks/perf_precision.py ner-bilstm 100 [--record]   # recipe, steps (seq2seq 30-40, generation-lstm 20)

`train.mixed_precision: auto` picks bf16 on a CPU only where bf16 matrix products run on bf16 hardware (AMX tiles,
or AVX-512 BF16 dot products); this measures what that choice is worth for whole training steps of one recipe:
the same model on the same pre-collated batches (`perf_overhead.run_raw`), one thread, three interleaved rounds,
CPU time (so the ratio holds on a busy machine). `--record` appends the ratio to benchmarks/results.jsonl.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perf_overhead import ROOT, fixed_steps_overrides, prepare, raw_batches, run_raw  # noqa: E402
from results_log import append_results  # noqa: E402


def cpu_flags() -> str:
    """The bf16-relevant instruction sets /proc/cpuinfo lists (Linux), e.g. "amx_bf16 avx512_bf16"."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    return " ".join(f for f in flags.split(":", 1)[1].split() if f in ("amx_bf16", "amx_tile", "avx512_bf16"))


def main(argv: list[str]) -> int:
    torch.set_num_threads(1)
    import nlpipe.run

    record = "--record" in argv
    args = [a for a in argv if a != "--record"]
    name, steps = args[0], int(args[1]) if len(args) > 1 else 100
    recipe, _, task, tokenizer, encoded = prepare(name, fixed_steps_overrides(steps), str(ROOT.parent / "shared" / "data"))
    batches = raw_batches(recipe, task, encoded, steps)
    resolve = nlpipe.run.resolve_mixed_precision
    seconds: dict[str, list[float]] = {"no": [], "bf16": []}
    try:
        for round_ in range(3):
            for mode in ("no", "bf16") if round_ % 2 == 0 else ("bf16", "no"):
                nlpipe.run.resolve_mixed_precision = lambda setting, cpu, mode=mode: mode
                started = time.process_time()
                run_raw(recipe, task, tokenizer, batches)
                seconds[mode].append(time.process_time() - started)
    finally:
        nlpipe.run.resolve_mixed_precision = resolve
    fp32, bf16 = statistics.median(seconds["no"]), statistics.median(seconds["bf16"])
    flags = cpu_flags()
    print(f"{name}: {steps} steps, CPU seconds (median of 3) float32 {fp32:.2f}, bf16 autocast {bf16:.2f}: "
          f"{fp32 / bf16:.3f}x; CPU flags: {flags or 'no bf16 units'}; auto picks "
          f"{resolve('auto', True)}; rounds {seconds}")
    if record:
        append_results([{"recipe": name, "metric": "bf16_over_float32_step_speed", "value": round(fp32 / bf16, 3),
                         "steps": steps, "cpu_seconds_float32": round(fp32, 2), "cpu_seconds_bf16": round(bf16, 2),
                         "cpu_flags": flags}])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
