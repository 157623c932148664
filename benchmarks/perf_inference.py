"""`pipeline("ner")` throughput of saved NER runs: sentences/s at batch size 1 and 32.

    python benchmarks/perf_inference.py RUN_DIR [RUN_DIR ...] [--sentences 320] [--threads 1] [--record]

Sentences are the first N of the CoNLL-2003 test split (shared/data, `-DOCSTART-` removed), given as raw
text (tokens joined by spaces), so the figure includes tokenization, char ids, the model, CRF decoding and
entity grouping (`aggregation_strategy="simple"`). (`generate()` speed of seq2seq/LM models is measured by
benchmarks/generate_speed.py.)
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_log import ROOT, append_results  # noqa: E402


def test_sentences(data_dir: str, n: int) -> list[str]:
    """The first `n` CoNLL-2003 test sentences as space-joined text."""
    sentences, words = [], []
    with gzip.open(Path(data_dir) / "conll2003" / "test.txt.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line or line.startswith("-DOCSTART-"):
                if words:
                    sentences.append(" ".join(words))
                    words = []
                if len(sentences) >= n:
                    break
                continue
            words.append(line.split()[0])
    return sentences[:n]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--sentences", type=int, default=320)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import pipeline

    import nlpipe  # noqa: F401  (registers the Auto classes and pipelines)

    texts = test_sentences(args.data_dir, args.sentences)
    words = sum(len(t.split()) for t in texts)
    for run in args.runs:
        recipe = json.loads((Path(run) / "run_info.json").read_text()).get("recipe", Path(run).name)
        ner = pipeline("ner", model=run, aggregation_strategy="simple")
        ner(texts[:4])  # warm-up
        for batch_size in (1, 32):
            load = os.getloadavg()[0]
            start = time.perf_counter()
            ner(texts, batch_size=batch_size)
            elapsed = time.perf_counter() - start
            rate = len(texts) / elapsed
            print(f"{recipe} ({run}): batch {batch_size}: {rate:.1f} sentences/s, {words / elapsed:.0f} words/s "
                  f"(load {load:.1f})", flush=True)
            if args.record:
                append_results([{
                    "recipe": recipe, "dataset": "conll2003", "split": "test", "metric": "pipeline_sentences_per_s",
                    "value": round(rate, 1), "batch_size": batch_size, "wall_s": round(elapsed, 1),
                    "tokens_per_s": round(words / elapsed, 1), "sentences": len(texts),
                    "threads": torch.get_num_threads(), "load": round(load, 1),
                }])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
