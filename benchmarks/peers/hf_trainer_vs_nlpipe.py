"""transformers' own `Trainer` (what `run_ner.py` does) vs nlpipe's loop, training the same from-scratch BERT.

    python benchmarks/peers/hf_trainer_vs_nlpipe.py [--steps 150] [--rounds 3] [--threads 1] [--record]

Both sides train `BertForTokenClassification` from the `ner-bert` recipe's config (same seed, same initial
weights) on the same encoded CoNLL-2003 training split (the recipe's WordPiece tokenizer, labels on every
sub-token), batch 32, AdamW at the recipe's learning rate and weight decay, constant schedule, gradient
clipping 1.0, fp32, for the same number of optimizer steps:

- ``nlpipe``: `nlpipe.training.loop.train` as `run_recipe` calls it (length-bucketed batches); tokens/s is the
  one nlpipe reports (evaluation excluded).
- ``hf-trainer``: `transformers.Trainer` with `DataCollatorForTokenClassification` and
  ``train_sampling_strategy="group_by_length"`` (transformers 5's name for ``group_by_length=True``: its
  own length grouping, the fair setting; without it BERT is ≈2× slower, PEERS.md), its default optimizer,
  no logging, no saving; tokens/s = real sub-tokens of the batches it collated / ``train_runtime``.

Tokens are real (non-padding) sub-tokens, [CLS]/[SEP] included, on both sides. Trainer is part of
transformers, which nlpipe already depends on, so no separate environment is needed. The two run
interleaved in rounds (A B, B A, ...) and the ratio is taken from the medians, because the machine is shared.
Writes ``throughput_ratio_vs_hf_trainer`` to benchmarks/results.jsonl with ``--record``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from perf_overhead import fixed_steps_overrides, fresh_model, prepare, run_nlpipe  # noqa: E402
from results_log import ROOT, append_results  # noqa: E402


def run_hf_trainer(recipe, task, tokenizer, encoded, steps: int) -> dict:
    """`steps` optimizer steps of `transformers.Trainer` on the recipe's model and data."""
    from transformers import DataCollatorForTokenClassification, Trainer, TrainingArguments

    model = fresh_model(task, tokenizer, recipe.train.seed)
    pad_and_mask = DataCollatorForTokenClassification(tokenizer, label_pad_token_id=-100)
    counted = {"tokens": 0}

    def collate(features: list[dict]) -> dict[str, torch.Tensor]:
        features = [{k: f[k] for k in ("input_ids", "labels")} for f in features]
        batch = pad_and_mask(features)
        counted["tokens"] += int(batch["attention_mask"].sum())
        return batch

    t = recipe.train
    with tempfile.TemporaryDirectory(prefix="hf-trainer-") as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=t.batch_size, max_steps=steps,
            learning_rate=t.learning_rate, weight_decay=t.weight_decay, lr_scheduler_type="constant",
            warmup_steps=0, max_grad_norm=t.max_grad_norm, train_sampling_strategy="group_by_length",
            length_column_name="length",
            remove_unused_columns=False, logging_strategy="no", save_strategy="no", report_to="none",
            use_cpu=True, dataloader_num_workers=0, seed=t.seed, disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=args, train_dataset=encoded["train"], data_collator=collate)
        output = trainer.train()
    runtime = output.metrics["train_runtime"]
    return {"tokens": counted["tokens"], "tokens_per_s": counted["tokens"] / runtime, "steps": output.global_step}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="ner-bert")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import nlpipe  # noqa: F401

    load_before = os.getloadavg()
    overrides = fixed_steps_overrides(args.steps)
    recipe, data, task, tokenizer, encoded = prepare(args.recipe, overrides, args.data_dir)
    kinds = ["nlpipe", "hf-trainer"]
    results: dict[str, list[float]] = {k: [] for k in kinds}
    for r in range(args.rounds):
        for kind in kinds[r % 2:] + kinds[: r % 2]:
            if kind == "nlpipe":
                out = run_nlpipe(recipe, data, task, tokenizer, encoded)
            else:
                out = run_hf_trainer(recipe, task, tokenizer, encoded, args.steps)
            results[kind].append(out["tokens_per_s"])
            print(f"  round {r + 1} {kind:>10}: {out['tokens_per_s']:8.0f} sub-tokens/s ({out['steps']} steps, "
                  f"{out['tokens']} tokens)", flush=True)
    load_after = os.getloadavg()
    med = {k: statistics.median(v) for k, v in results.items()}
    ratio = med["nlpipe"] / med["hf-trainer"]
    paired = [a / b for a, b in zip(results["nlpipe"], results["hf-trainer"], strict=True)]
    print("per-round nlpipe/hf-trainer: " + ", ".join(f"{x:.2f}" for x in paired))
    print(f"throughput_ratio_vs_hf_trainer = {ratio:.3f} (nlpipe {med['nlpipe']:.0f}, Trainer {med['hf-trainer']:.0f} "
          f"sub-tokens/s); load before {load_before[0]:.1f}, after {load_after[0]:.1f}")
    if args.record:
        append_results([{
            "recipe": args.recipe, "dataset": recipe.data.dataset, "split": "train",
            "metric": "throughput_ratio_vs_hf_trainer", "value": round(ratio, 3),
            "tokens_per_s": round(med["nlpipe"], 1), "reference_tokens_per_s": round(med["hf-trainer"], 1),
            "per_round_ratios": [round(x, 3) for x in paired], "steps": args.steps, "rounds": args.rounds,
            "threads": torch.get_num_threads(), "load_before": round(load_before[0], 1),
            "load_after": round(load_after[0], 1),
        }])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
