"""Time every recipe's quick sample run (`nlpipe run recipe NAME --data sample`) and print a Markdown table.

Each recipe runs through the real CLI in its own process, one after the other, with the recipe's ``sample``
settings (nothing else overridden), so the table shows what a new user's first command costs. The load average
before and after each run is printed too: on a shared machine it explains most of the spread. The CPU time of
the run's process is printed beside its wall time: with ``--threads 1`` it is what the run takes on an idle core,
whatever else the machine is doing (a 2-thread run on an idle 2-core machine is no slower for these small models).

    python benchmarks/sample_runs.py                      # every recipe
    python benchmarks/sample_runs.py ner-bilstm-crf ...   # some
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]



def chance_scores() -> dict[str, str]:
    """What a model that learnt nothing useful scores on each sample's test split (the "chance" column).

    NER: tagging everything O (F1 0). Translation: copying the German source. Summarization: the most frequent
    training summary for every chat. Language modelling: a unigram model of the training words (add-one).
    """
    import collections
    import math

    import sacrebleu
    from rouge_score import rouge_scorer

    from nlpipe.data.samples import make_sample

    out = {"f1": "0.00 (all O)"}
    mt = make_sample("translation")["test"]
    bleu = sacrebleu.corpus_bleu([r["source"] for r in mt], [[r["target"] for r in mt]], force=True).score
    out["sacrebleu"] = f"{bleu:.2f} (copy the source)"
    summ = make_sample("summarization")
    constant = collections.Counter(r["target"] for r in summ["train"]).most_common(1)[0][0]
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    rouge = 100 * sum(scorer.score(r["target"], constant)["rougeL"].fmeasure for r in summ["test"]) / len(summ["test"])
    out["rougeL"] = f"{rouge:.2f} (one summary for all)"
    lm = make_sample("lm")
    counts = collections.Counter(w for r in lm["train"] for w in r["text"].split() + ["<eos>"])
    total, vocab = sum(counts.values()), len(counts) + 1
    test = [w for r in lm["test"] for w in r["text"].split() + ["<eos>"]]
    nll = -sum(math.log((counts[w] + 1) / (total + vocab)) for w in test) / len(test)
    out["perplexity"] = f"{math.exp(nll):.1f} (unigram)"
    return out


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_one(name: str, out: Path, threads: int | None) -> dict:
    """Run one recipe on the sample data in a fresh process; return its wall and CPU time, steps and test score."""
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    load_before = os.getloadavg()[0]
    cpu_before = _children_cpu_s()
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "nlpipe", "run", "recipe", name, "--data", "sample", "--no-progress", "--overwrite",
         "--output-dir", str(out / "runs" / name)],
        capture_output=True, text=True, env=env, cwd=out,  # runs/NAME, as a user's (init_from: runs/pretrain-bert)
    )
    wall = time.perf_counter() - start
    row = {"recipe": name, "wall_s": round(wall, 1), "cpu_s": round(_children_cpu_s() - cpu_before, 1),
           "threads": threads, "load_before": round(load_before, 1),
           "load_after": round(os.getloadavg()[0], 1), "returncode": proc.returncode}
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"]
        row["error"] = next((line for line in reversed(lines) if line.startswith("error:")), lines[-1])
        return row
    metrics = json.loads((out / "runs" / name / "metrics.json").read_text())
    metric = metrics["selection_metric"]
    # Pretraining recipes score only their held-out validation slice (no test split of their own).
    split = "test" if "test" in metrics else "validation"
    metric_label = metric if split == "test" else f"{metric} (validation)"
    row.update(metric=metric_label, test=round(metrics[split][metric], 2), steps=metrics["train"]["steps"],
               train_s=metrics["train"]["wall_s"], stopped_because=metrics["train"].get("stopped_because"))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="*", help="recipe names (default: every recipe in recipes/)")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the runs (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="where the run folders go (default: a temp folder)")
    args = parser.parse_args()
    names = args.recipes or sorted(p.stem for p in (REPO / "recipes").glob("*.yaml"))
    out = args.out or Path(tempfile.mkdtemp(prefix="nlpipe-sample-runs-"))
    chance = chance_scores()
    print("| recipe | CPU time (s) | wall (s) | train (s) | steps | test score | chance | load before→after |",
          flush=True)
    print("|---|---|---|---|---|---|---|---|", flush=True)
    for name in names:
        row = run_one(name, out, args.threads)
        print(json.dumps(row), file=sys.stderr, flush=True)
        if row["returncode"]:
            print(f"| {name} | {row['cpu_s']} | {row['wall_s']} | – | – | failed: {row['error']} | | "
                  f"{row['load_before']}→{row['load_after']} |", flush=True)
            continue
        print(f"| {name} | {row['cpu_s']:.0f} | {row['wall_s']:.0f} | {row['train_s']:.0f} | {row['steps']} | {row['metric']} "
              f"{row['test']:.2f} | {chance.get(row['metric'], '')} | {row['load_before']}→{row['load_after']} |",
              flush=True)


if __name__ == "__main__":
    main()
