"""The GPU check of issue 17 §4: one recipe per family trained briefly on CUDA with bf16, then inference speed.

    python benchmarks/gpu_check.py [--data-dir DIR] [--minutes 1] [--out DIR]     # on the GPU machine
    python benchmarks/gpu_check.py --smoke                                      # a CPU rehearsal, ~2 min
    python benchmarks/gpu_check.py --record-from OUT/gpu_check.jsonl            # back here: into BENCHMARKS.md

Run through ``benchmarks/gpu_check.sh`` (one call of the device tool, well under ten minutes). Trains
``ner-bilstm-crf`` (recurrent tagger), ``translation-gru-attn`` (RNN seq2seq), ``generation-lstm`` (RNN LM)
and ``translation-transformer`` (transformers' Marian) for ``--minutes`` each with ``train.mixed_precision=bf16``,
evaluates on at most 500 test examples, then measures on the GPU:

- ``pipeline("ner")`` sentences/s at batch 1 and 32 on 320 test sentences (raw text in, entities out);
- ``generate()`` new tokens/s of both translation models and the LM at batch 1 and 32, greedy and beam 5
  (seq2seq), float32 and bf16 weights, exactly 32 new tokens per sequence (``min_new_tokens``).

The device machine's files do not come back, so every figure goes to ``OUT/gpu_check.jsonl`` and
``OUT/gpu_check.md`` (OUT is ``$OUT`` there); ``--record-from`` then appends them to
``benchmarks/results.jsonl`` and BENCHMARKS.md here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's nlpipe, also where it is not installed (the GPU machine)

FAMILIES = [  # (family, recipe) — one recipe per family
    ("recurrent tagger", "ner-bilstm-crf"),
    ("RNN seq2seq", "translation-gru-attn"),
    ("RNN LM", "generation-lstm"),
    ("Transformer (Marian)", "translation-transformer"),
]
SMOKE = ["train.max_steps=2", "data.max_train_examples=64", "data.max_eval_examples=8"]
NEW_TOKENS = 32


def log(message: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", flush=True)


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def train_all(args: argparse.Namespace, device: str, rows: list[dict[str, Any]]) -> dict[str, Path]:
    """Train each family's recipe briefly; return the run folders that finished."""
    from nlpipe.run import run_recipe

    runs = {}
    for family, recipe in FAMILIES:
        overrides = SMOKE if args.smoke else [f"train.max_train_minutes={args.minutes}", "data.max_eval_examples=500"]
        if device == "cuda":
            overrides = [*overrides, "train.mixed_precision=bf16"]
        out = args.runs_dir / recipe
        log(f"train {recipe} ({family}) {' '.join(overrides)}")
        try:
            result = run_recipe(recipe, overrides, data="sample" if args.data_dir is None else None,
                                data_dir=args.data_dir, output_dir=out, overwrite=True, progress=False)
        except Exception:  # noqa: BLE001 - one family failing must not lose the others' figures
            log(f"{recipe} FAILED:\n{traceback.format_exc()}")
            rows.append({"family": family, "recipe": recipe, "metric": "train_failed", "value": 1})
            continue
        runs[recipe] = out
        train = result.metrics.get("train", {})
        metric = result.metrics.get("selection_metric")
        rows.append({"family": family, "recipe": recipe, "metric": "gpu_train_tokens_per_s",
                     "value": round(float(train.get("tokens_per_s", 0)), 1), "wall_s": train.get("wall_s"),
                     "steps": train.get("steps"), "test_" + str(metric): result.metrics.get("test", {}).get(metric),
                     "what": "training, " + ("2 steps (smoke)" if args.smoke else f"{args.minutes} min budget")
                     + (", bf16 autocast" if device == "cuda" else "")})
    return runs


def test_texts(recipe: str, args: argparse.Namespace, n: int) -> list[str]:
    from nlpipe.data.catalog import load_data
    from nlpipe.recipe import load_recipe

    dataset = load_recipe(recipe).data.dataset
    test = load_data(dataset, source="sample" if args.data_dir is None else None, data_dir=args.data_dir,
                     max_eval_examples=n)["test"]
    column = {"tokens": None, "source": "source", "text": "text"}
    for name in column:
        if name in test.column_names:
            texts = [" ".join(t) for t in test["tokens"]] if name == "tokens" else list(test[name])
            texts = [t for t in texts if t.strip()]
            return (texts * (n // max(1, len(texts)) + 1))[:n]
    raise ValueError(f"no text column in {dataset}: {test.column_names}")


def measure_ner(run_dir: Path, args: argparse.Namespace, device: str, rows: list[dict[str, Any]]) -> None:
    from transformers import pipeline

    texts = test_texts("ner-bilstm-crf", args, 320)
    words = sum(len(t.split()) for t in texts)
    ner = pipeline("ner", model=str(run_dir), aggregation_strategy="simple", device=0 if device == "cuda" else -1)
    for batch_size in (1, 32):
        ner(texts[:64], batch_size=batch_size)  # warm-up (kernels, allocator)
        sync(device)
        start = time.perf_counter()
        ner(texts, batch_size=batch_size)
        sync(device)
        seconds = time.perf_counter() - start
        rows.append({"family": "recurrent tagger", "recipe": "ner-bilstm-crf", "metric": "gpu_pipeline_sentences_per_s",
                     "value": round(len(texts) / seconds, 1), "words_per_s": round(words / seconds),
                     "batch_size": batch_size, "what": f'pipeline("ner") on {len(texts)} test sentences, float32'})


def measure_generate(recipe: str, family: str, run_dir: Path, args: argparse.Namespace, device: str,
                     rows: list[dict[str, Any]]) -> None:
    import torch
    import transformers

    causal = recipe.startswith("generation-")
    auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModelForSeq2SeqLM
    tokenizer = transformers.AutoTokenizer.from_pretrained(run_dir)
    texts = test_texts(recipe, args, 32)
    if causal:
        texts = [" ".join(t.split()[:8]) for t in texts]  # prompts of up to 8 words
    for dtype in (torch.float32, torch.bfloat16):
        model = auto.from_pretrained(run_dir).to(device=device, dtype=dtype).eval()
        for batch_size in (1, 32):
            for beams in ((1,) if causal else (1, 5)):
                chunk = texts[:batch_size]
                if causal:
                    tokenizer.padding_side = "left"
                enc = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True,
                                add_special_tokens=not causal).to(device)
                kwargs = dict(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, num_beams=beams, do_sample=False)
                if tokenizer.pad_token_id is not None:
                    kwargs["pad_token_id"] = tokenizer.pad_token_id
                try:
                    with torch.no_grad():
                        model.generate(**enc, **kwargs)  # warm-up
                        sync(device)
                        start = time.perf_counter()
                        rounds = 3 if batch_size == 1 else 2
                        for _ in range(rounds):
                            model.generate(**enc, **kwargs)
                        sync(device)
                except Exception as exc:  # noqa: BLE001 - e.g. an op without a bf16 kernel: recorded, not fatal
                    log(f"{recipe} generate {dtype} batch {batch_size} beams {beams} FAILED: {exc}")
                    continue
                seconds = (time.perf_counter() - start) / rounds
                rows.append({"family": family, "recipe": recipe, "metric": "gpu_generate_tokens_per_s",
                             "value": round(batch_size * NEW_TOKENS / seconds, 1), "batch_size": batch_size,
                             "num_beams": beams, "dtype": str(dtype).replace("torch.", ""),
                             "what": f"generate(), {NEW_TOKENS} new tokens per sequence"})
        del model


def markdown(rows: list[dict[str, Any]], device_name: str) -> str:
    lines = ["| family | recipe | what | settings | figure | device |", "|---|---|---|---|---|---|"]
    for row in rows:
        settings = ", ".join(f"{k} {row[k]}" for k in ("batch_size", "num_beams", "dtype", "steps", "wall_s")
                             if row.get(k) is not None)
        extra = "; ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in row.items() if k.startswith("test_") or k == "words_per_s")
        unit = {"gpu_train_tokens_per_s": "tokens/s", "gpu_pipeline_sentences_per_s": "sentences/s",
                "gpu_generate_tokens_per_s": "new tokens/s"}.get(row["metric"], row["metric"])
        lines.append(f"| {row['family']} | {row['recipe']} | {row.get('what', '')} | {settings} | "
                     f"{row['value']:,} {unit}{'; ' + extra if extra else ''} | {device_name} |")
    return "\n".join(lines) + "\n"


def record_from(path: Path) -> None:
    """Append a device run's figures (gpu_check.jsonl + gpu_check.md beside it) to results.jsonl and BENCHMARKS.md."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    with open(ROOT / "benchmarks" / "results.jsonl", "a", encoding="utf-8") as handle:
        for line in lines:
            handle.write(json.dumps(line) + "\n")
    table = (path.parent / "gpu_check.md").read_text()
    date = lines[0].get("date", "") if lines else ""
    with open(ROOT / "BENCHMARKS.md", "a", encoding="utf-8") as handle:
        handle.write(f"\n## GPU check ({date}, `bash benchmarks/gpu_check.sh`)\n\n{table}")
    print(f"appended {len(lines)} figures to benchmarks/results.jsonl and BENCHMARKS.md")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=None, help="real data laid out like shared/data "
                        "(default: $NLPIPE_DATA_DIR, else the built-in sample)")
    parser.add_argument("--minutes", type=float, default=1.0, help="training budget per recipe")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu_check_out"))
    parser.add_argument("--runs-dir", type=Path, default=Path("/tmp/nlpipe-gpu-check-runs"),
                        help="run folders (outside OUT: only the figures need to come back)")
    parser.add_argument("--smoke", action="store_true", help="CPU rehearsal: 2 steps per recipe, sample data")
    parser.add_argument("--record-from", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.record_from is not None:
        record_from(args.record_from)
        return 0
    if args.data_dir is None and os.environ.get("NLPIPE_DATA_DIR"):
        args.data_dir = Path(os.environ["NLPIPE_DATA_DIR"])
    if args.smoke:
        args.data_dir = None

    import torch

    import nlpipe  # noqa: F401  (registers the Auto classes and pipelines)
    from nlpipe.run import git_commit, machine_description

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.smoke:
        log("no CUDA device: run with --smoke for a CPU rehearsal")
        return 2
    device_name = machine_description()
    log(f"device {device_name}, torch {torch.__version__}, data {args.data_dir or 'sample'}, out {args.out}")
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    runs = train_all(args, device, rows)
    steps = [("ner-bilstm-crf", lambda run: measure_ner(run, args, device, rows))]
    steps += [(recipe, lambda run, r=recipe, f=family: measure_generate(r, f, run, args, device, rows))
              for family, recipe in FAMILIES if recipe != "ner-bilstm-crf"]
    for recipe, measure in steps:
        if recipe in runs:
            log(f"measure {recipe}")
            try:
                measure(runs[recipe])
            except Exception:  # noqa: BLE001
                log(f"measuring {recipe} FAILED:\n{traceback.format_exc()}")
    stamp = {"device": device_name, "commit": git_commit(), "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
             "command": "bash benchmarks/gpu_check.sh" + (" (smoke)" if args.smoke else "")}
    with open(args.out / "gpu_check.jsonl", "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps({**stamp, **row}) + "\n")
    table = markdown(rows, device_name)
    (args.out / "gpu_check.md").write_text(table)
    print(table, flush=True)
    return 0 if not any(row["metric"] == "train_failed" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
