"""Run a recipe on the real data and record the result.

    python benchmarks/run_benchmark.py ner-bilstm [--data-dir ../shared/data] [key=value ...]
    python benchmarks/run_benchmark.py RECIPE [key=value ...] --output-dir runs/NAME --resume   # after a cut-off

Appends one row to BENCHMARKS.md (score, wall time, tokens/s, parameters, machine, command) and
one JSON line per reported metric to benchmarks/results.jsonl, with the fields
recipe, dataset, split, metric, value, wall_s, tokens_per_s, device, commit, date.
Full-size runs take minutes to an hour: run them in the background, never in CI.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results.jsonl"
TABLE = ROOT / "BENCHMARKS.md"
REPORTED = ("f1", "f1_strict", "sacrebleu", "chrf", "rouge1", "rouge2", "rougeL", "rougeLsum", "perplexity")
TABLE_HEADER = (
    "| date | recipe | data | test score | validation score | train wall s | train tokens/s | parameters | machine | commit | command |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|\n"
)


def record(result_metrics: dict, recipe_name: str, dataset: str, info: dict, command: str) -> None:
    """Append the run's figures to results.jsonl and BENCHMARKS.md."""
    train = result_metrics["train"]
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    lines = []
    for split in ("validation", "test"):
        # BLEU by source length (sacrebleu_len_01_10, ...) is reported too: it is the bottleneck evidence.
        by_length = sorted(k for k in result_metrics.get(split, {}) if k.startswith("sacrebleu_len_"))
        for metric in (*REPORTED, *by_length):
            if metric in result_metrics.get(split, {}):
                lines.append({
                    "recipe": recipe_name, "dataset": dataset, "split": split, "metric": metric,
                    "value": round(float(result_metrics[split][metric]), 3), "wall_s": train["wall_s"],
                    "tokens_per_s": train["tokens_per_s"], "parameters": result_metrics.get("parameters"),
                    "device": info.get("machine"), "commit": info.get("nlpipe_commit"), "date": date,
                    "command": command,
                })
    with open(RESULTS, "a", encoding="utf-8") as handle:
        for line in lines:
            handle.write(json.dumps(line) + "\n")
    from nlpipe.compare import comparable_metric

    selection = result_metrics.get("selection_metric", "f1")

    def score(split: str) -> str:
        # The figure published results report (rougeLsum for a run selecting on rougeL).
        shown = comparable_metric(selection, result_metrics.get(split, {}))
        value = result_metrics.get(split, {}).get(shown)
        return f"{shown} {value:.2f}" if value is not None else "–"

    if not TABLE.exists() or "## Recipe runs" not in TABLE.read_text():
        with open(TABLE, "a", encoding="utf-8") as handle:
            handle.write("\n## Recipe runs\n\nAppended by `benchmarks/run_benchmark.py`.\n\n" + TABLE_HEADER)
    row = (
        f"| {date} | {recipe_name} | {dataset} | {score('test')} | {score('validation')} | {train['wall_s']:.0f} "
        f"| {train['tokens_per_s']:,.0f} | {result_metrics.get('parameters', 0):,} | {info.get('machine')} "
        f"| {info.get('nlpipe_commit')} | `{command}` |\n"
    )
    text = TABLE.read_text()
    marker = "## Recipe runs"
    head, _, tail = text.partition(marker)
    # keep the table contiguous: insert the row after the last table row of the section
    section_lines = tail.splitlines(keepends=True)
    last = max(i for i, line in enumerate(section_lines) if line.startswith("|"))
    section_lines.insert(last + 1, row)
    TABLE.write_text(head + marker + "".join(section_lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--output-dir", default=None)
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted run in --output-dir from its last checkpoint (same overrides)")
    args = parser.parse_intermixed_args(argv)  # overrides may come before or after the options

    from nlpipe.errors import NlpipeError
    from nlpipe.run import run_recipe

    output = Path(args.output_dir or ROOT / "benchmarks" / "out" / args.recipe)
    command = "python benchmarks/run_benchmark.py " + " ".join(shlex.quote(a) for a in [args.recipe, *args.overrides])
    if args.resume:
        command += " (resumed with --resume after an interruption)"
    try:
        result = run_recipe(args.recipe, args.overrides, data_dir=args.data_dir, output_dir=output,
                            resume=args.resume, overwrite=not args.resume, progress=False)
    except NlpipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    info = json.loads((result.run_dir / "run_info.json").read_text())
    record(result.metrics, args.recipe, info["dataset"], info, command)
    print(json.dumps({k: result.metrics[k] for k in ("test", "train") if k in result.metrics})[:2000])
    return 0


if __name__ == "__main__":
    from nlpipe.cpu_allocator import use_tcmalloc

    use_tcmalloc()  # as the nlpipe command does (nlpipe/cpu_allocator.py); NLPIPE_ALLOCATOR=system: glibc
    sys.exit(main())
