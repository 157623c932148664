"""Translation/summarization figures that are not a recipe run.

    python benchmarks/seq2seq_report.py lead [--data-dir ../shared/data] [--turns 1 2 3]
    python benchmarks/seq2seq_report.py lengths translation-gru translation-gru-attn translation-transformer

``lead`` scores the lead baseline of dialogue summarization (the first N turns of each SAMSum test
dialogue, :func:`nlpipe.tasks.seq2seq.lead_summary`) with the same ROUGE as the summarization
task, prints a Markdown table and appends one line per metric to ``benchmarks/results.jsonl``.

``lengths`` prints the BLEU-by-source-length table (test split) of finished benchmark runs, read
from ``benchmarks/out/<recipe>/metrics.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results.jsonl"


def lead_table(data_dir: str, turns: list[int]) -> str:
    """ROUGE of the lead-N baselines on the SAMSum test split, as Markdown (also appended to results.jsonl)."""
    from nlpipe.data.catalog import load_data
    from nlpipe.metrics import compute_metric
    from nlpipe.tasks.seq2seq import lead_summary

    test = load_data("samsum", data_dir=data_dir)["test"]
    sources, references = list(test["source"]), list(test["target"])
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    rows = ["| baseline | test ROUGE-1 | ROUGE-2 | ROUGE-L | ROUGE-Lsum |", "|---|---|---|---|---|"]
    with open(RESULTS, "a", encoding="utf-8") as handle:
        for n in turns:
            scores = compute_metric("rouge", [lead_summary(s, n) for s in sources], references)
            rows.append(f"| lead-{n} (first {n} turns) | {scores['rouge1']:.2f} | {scores['rouge2']:.2f} "
                        f"| {scores['rougeL']:.2f} | {scores['rougeLsum']:.2f} |")
            for metric in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
                handle.write(json.dumps({
                    "recipe": f"samsum-lead-{n}", "dataset": "samsum", "split": "test", "metric": metric,
                    "value": round(float(scores[metric]), 3), "date": date,
                    "command": f"python benchmarks/seq2seq_report.py lead --turns {n}",
                }) + "\n")
    return "\n".join(rows)


def length_table(recipes: list[str]) -> str:
    """sacreBLEU by source length (test) of finished runs under benchmarks/out/, as Markdown."""
    from nlpipe.tasks.seq2seq import LENGTH_BUCKETS, bucket_key

    keys = [bucket_key(low, high) for low, high in LENGTH_BUCKETS]
    labels = [f"{low}–{high}" if high else f"{low}+" for low, high in LENGTH_BUCKETS]
    rows = ["| recipe | all | " + " | ".join(f"src words {x}" for x in labels) + " |",
            "|---|---|" + "---|" * len(keys)]
    for recipe in recipes:
        path = ROOT / "benchmarks" / "out" / recipe / "metrics.json"
        if not path.is_file():
            rows.append(f"| {recipe} | (no finished run) |" + " |" * len(keys))
            continue
        test = json.loads(path.read_text())["test"]
        cells = [f"{test[k]:.2f} (n={int(test['n' + k[len('sacrebleu'):]])})" if k in test else "–" for k in keys]
        rows.append(f"| {recipe} | {test['sacrebleu']:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    lead = sub.add_parser("lead")
    lead.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    lead.add_argument("--turns", type=int, nargs="+", default=[1, 2, 3])
    lengths = sub.add_parser("lengths")
    lengths.add_argument("recipes", nargs="+")
    args = parser.parse_args(argv)
    print(lead_table(args.data_dir, args.turns) if args.command == "lead" else length_table(args.recipes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
