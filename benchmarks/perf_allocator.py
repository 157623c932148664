"""A/B of the C library's malloc and tcmalloc for a recipe's raw training steps (nlpipe/cpu_allocator.py).

    python benchmarks/perf_allocator.py translation-transformer 40 [--record]   # recipe, steps per round

Each variant runs in its own fresh process (an allocator is chosen at process start), two processes per
variant, alternating; each process times four rounds of the same `steps` pre-collated batches
(`perf_overhead.run_raw`, one thread, the recipe's precision, CPU time) and reports the median of its last
three rounds and its peak resident memory. Needs tcmalloc installed (Debian/Ubuntu: libtcmalloc-minimal4).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def child(name: str, steps: int) -> None:
    import torch
    from perf_overhead import ROOT, fixed_steps_overrides, prepare, raw_batches, run_raw

    from nlpipe.cpu_allocator import loaded_allocator

    torch.set_num_threads(1)
    recipe, _, task, tokenizer, encoded = prepare(name, fixed_steps_overrides(steps), str(ROOT.parent / "shared" / "data"))
    batches = raw_batches(recipe, task, encoded, steps)
    seconds = []
    for _ in range(4):
        started = time.process_time()
        run_raw(recipe, task, tokenizer, batches)
        seconds.append(time.process_time() - started)
    print("RESULT " + json.dumps({"allocator": loaded_allocator(), "seconds": statistics.median(seconds[1:]),
                                  "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--child":
        child(argv[1], int(argv[2]))
        return 0
    from nlpipe.cpu_allocator import find_tcmalloc

    record = "--record" in argv
    args = [a for a in argv if a != "--record"]
    name, steps = args[0], int(args[1]) if len(args) > 1 else 40
    library = find_tcmalloc()
    if library is None:
        raise SystemExit("error: tcmalloc is not installed (Debian/Ubuntu: apt install libtcmalloc-minimal4)")
    runs: dict[str, list[dict]] = {"system": [], "tcmalloc": []}
    for variant in ("system", "tcmalloc", "system", "tcmalloc"):
        env = {**os.environ, "NLPIPE_ALLOCATOR": "system"}
        env.pop("LD_PRELOAD", None)
        if variant == "tcmalloc":
            env.update(LD_PRELOAD=library, TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD=str(1 << 40))
        child_run = subprocess.run([sys.executable, __file__, "--child", name, str(steps)], env=env,
                                   capture_output=True, text=True)
        if child_run.returncode != 0:  # e.g. a bad recipe name: the child's own one-line message
            raise SystemExit((child_run.stderr.strip().splitlines() or ["error: the timing process failed"])[-1])
        out = child_run.stdout
        result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
        assert result["allocator"] == variant, result
        runs[variant].append(result)
    system = statistics.median(r["seconds"] for r in runs["system"])
    tcmalloc = statistics.median(r["seconds"] for r in runs["tcmalloc"])
    rss = {k: max(r["max_rss_mb"] for r in v) for k, v in runs.items()}
    print(f"{name}: {steps} steps, CPU seconds system malloc {system:.2f}, tcmalloc {tcmalloc:.2f}: "
          f"{system / tcmalloc:.3f}x; peak RSS {rss['system']:.0f} vs {rss['tcmalloc']:.0f} MB; runs {runs}")
    if record:
        import torch
        from results_log import append_results

        torch.set_num_threads(1)  # the device line names the children's thread count

        append_results([{"recipe": name, "metric": "tcmalloc_over_system_step_speed", "value": round(system / tcmalloc, 3),
                         "steps": steps, "cpu_seconds_system": round(system, 2), "cpu_seconds_tcmalloc": round(tcmalloc, 2),
                         "max_rss_mb_system": round(rss["system"]), "max_rss_mb_tcmalloc": round(rss["tcmalloc"])}])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
