"""The run folder's README.md: a Hugging Face model card with metadata, results and usage.

Nothing secret goes in: the card is built from the recipe, the metrics and the run info only
(never environment variables or tokens).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from .data.catalog import CATALOG, source_label
from .recipe import Recipe

PIPELINE_TAGS = {
    "token-classification": "token-classification",
    "translation": "translation",
    "summarization": "summarization",
    "causal-lm": "text-generation",
    "masked-lm": "fill-mask",
}
LICENSE_NAMES = {"conll2003": "conll2003-reuters", "multi30k": "multi30k-flickr30k", "ptb": "ptb-ldc"}
LICENSES = {"conll2003": "other", "multi30k": "other", "ptb": "other", "wikitext2": "cc-by-sa-3.0", "samsum": "cc-by-nc-nd-4.0"}
HEADLINE = {
    "token-classification": ["f1", "precision", "recall", "f1_strict"],
    "translation": ["sacrebleu", "chrf"],
    "summarization": ["rouge1", "rouge2", "rougeL", "rougeLsum"],
    "causal-lm": ["perplexity"],
    "masked-lm": ["perplexity", "masked_accuracy"],
}
# What the scores mean, where a task's figures need saying how they were computed.
_SCORE_NOTES = {
    "token-classification": "; entity F1 with conlleval's chunk rules (seqeval default mode), comparable with "
    "published CoNLL results; `f1_strict` is seqeval strict IOB2, which drops ill-formed predicted spans",
    "summarization": "; ROUGE F-measures, stemmed; `rougeLsum` is summary-level ROUGE-L (over sentences), "
    "the RL that published SAMSum results report",
}


def _start_of(recipe: Recipe) -> str:
    """How the weights started: from scratch, or fine-tuned from ``model.init_from``."""
    source = recipe.model.get("init_from")
    if source:
        return f"fine-tuned from the pretrained body of `{source}` (its tokenizer; the task head trained from scratch)"
    return "trained from scratch (no pretrained embeddings)"


def _budget_row(budget: dict[str, Any] | None) -> str:
    """The card's training-table row for ``train.budget`` (empty without one)."""
    if not budget:
        return ""
    kind = next(k for k in ("steps", "tokens", "minutes") if k in budget)
    planned = f"{budget.get('planned_steps', 0):,} steps planned"
    if "tokens_per_step" in budget:
        planned += f" at {budget['tokens_per_step']:,.0f} tokens/step"
    if "replans" in budget:
        planned += f", re-planned {budget['replans']}×"
    return f"| budget | {budget[kind]:,g} {kind} ({planned}; the learning-rate schedule ends with the budget) |\n"


def plot_training_curve(run_dir: Path, selection_metric: str) -> Path | None:
    """Draw loss and the validation metric over steps from train_log.jsonl; return the PNG path."""
    log = run_dir / "train_log.jsonl"
    if not log.is_file():
        return None
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    losses = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["step"], r[selection_metric]) for r in records if r.get("split") == "validation" and selection_metric in r]
    if not losses and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if losses:
        # Few points (a short run: one logged loss) get markers, or a single point would draw nothing.
        ax.plot(*zip(*losses, strict=False), color="tab:blue", label="training loss",
                marker="o" if len(losses) <= 20 else None, markersize=3)
        ax.set_ylabel("training loss")
    ax.set_xlabel("optimizer step")
    if evals:
        ax2 = ax.twinx()
        ax2.plot(*zip(*evals, strict=False), color="tab:orange", marker="o", label=f"validation {selection_metric}")
        ax2.set_ylabel(f"validation {selection_metric}")
    fig.legend(loc="upper center", ncol=2, fontsize=8)
    fig.tight_layout()
    path = run_dir / "training_curve.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def model_card_text(
    recipe: Recipe,
    metrics: dict[str, Any],
    info: dict[str, Any],
    has_curve: bool,
    *,
    repo_id: str | None = None,
    remote_code: bool = False,
) -> str:
    """The card's Markdown, starting with YAML metadata the Hub reads.

    Args:
        repo_id: shown as the model to load in the usage example (else a placeholder).
        remote_code: the folder carries its model code (an export): show loading with
            ``trust_remote_code=True`` and no nlpipe.
    """
    entry = CATALOG.get(recipe.data.dataset)
    dataset_id = entry.hub_id if entry else recipe.data.dataset
    tag = PIPELINE_TAGS[recipe.task]
    headline = HEADLINE[recipe.task]
    results = []
    for split in ("validation", "test"):
        for name in headline:
            if name in metrics.get(split, {}):
                results.append({"type": name, "value": round(float(metrics[split][name]), 2), "name": f"{split} {name}"})
    on_sample = info.get("data", {}).get("source") == "sample"
    # Synthetic sample data is nlpipe's own (Apache-2.0), not the named data set's.
    license_id = "apache-2.0" if on_sample else LICENSES.get(recipe.data.dataset, "other")
    meta: dict[str, Any] = {
        "library_name": "transformers",
        "pipeline_tag": tag,
        "license": license_id,
        "tags": ["nlpipe", recipe.task, recipe.model["type"], recipe.name],
        "datasets": [dataset_id],
        "metrics": sorted({r["type"] for r in results}),
        "model-index": [
            {
                "name": recipe.name,
                "results": [
                    {
                        "task": {"type": tag},
                        "dataset": {"name": recipe.data.dataset, "type": dataset_id},
                        "metrics": results,
                    }
                ],
            }
        ],
    }
    if on_sample:
        # No claim about a Hub data set, and no model-index: these are smoke-run scores on synthetic data, not
        # results on the data set (the Hub would list them as such).
        del meta["datasets"], meta["model-index"]
        meta["tags"].append("nlpipe-sample-data")
    if license_id == "other":
        # The Hub asks for a name (and link) when the licence is "other".
        meta["license_name"] = LICENSE_NAMES.get(recipe.data.dataset, f"{recipe.data.dataset}-license")
    train = metrics.get("train", {})
    rows = "\n".join(
        f"| {split} | " + " | ".join(f"{metrics[split][n]:.2f}" if n in metrics.get(split, {}) else "–" for n in headline) + " |"
        for split in ("validation", "test")
        if split in metrics
    )
    data_used = source_label(recipe.data.dataset, info.get("data"))
    if on_sample:
        trained_on = (f"Trained with nlpipe recipe `{recipe.name}` on **nlpipe's built-in sample data** (`--data sample`): "
                      f"small synthetic data in the format of `{recipe.data.dataset}`, with the recipe's quick sample "
                      f"settings. It is **not** trained or scored on `{recipe.data.dataset}`: a smoke-test model, and "
                      "the scores below are not comparable to published results.")
        limitations = ("A smoke-test model trained on synthetic sample data: it shows that the pipeline works, "
                       "not how the architecture does on real text. Do not use it for anything else.")
    else:
        trained_on = f"Trained with nlpipe recipe `{recipe.name}` on {data_used}."
        limitations = (f"A research baseline for comparing sequence models, {_start_of(recipe)}. It inherits the biases and domain of `{recipe.data.dataset}` and will do worse "
                       f"on other text. Check the data set's licence (`{license_id}`) before any use beyond research.")
    usage = _usage(recipe, repo_id, remote_code) + _decoding_note(recipe)
    curve = "\n![training curve](training_curve.png)\n" if has_curve else ""
    recipe_yaml = yaml.safe_dump(recipe.to_dict(), sort_keys=False, allow_unicode=True).strip()
    return f"""---
{yaml.safe_dump(meta, sort_keys=False).strip()}
---

# {recipe.name}

{recipe.description or f"A {recipe.model['type']} model for {recipe.task}, trained with nlpipe."}

{trained_on}

## Results

| split | {" | ".join(headline)} |
|---|{"---|" * len(headline)}
{rows}

Scores on a 0–100 scale{_SCORE_NOTES.get(recipe.task, "")}. Best checkpoint
chosen on validation `{metrics.get("selection_metric", recipe.eval.metric)}`.

## Training

| | |
|---|---|
| data | {data_used} |
| parameters | {metrics.get("parameters", 0):,} |
| training time | {train.get("wall_s", 0):.0f} s ({train.get("epochs", 0)} epochs, {train.get("steps", 0)} steps) |
| throughput | {train.get("tokens_per_s", 0):,.0f} tokens/s |
| hardware | {info.get("machine", "unknown")} × {info.get("num_processes", 1)} process(es) |
| stopped because | {train.get("stopped_because", "")} |
{_budget_row(train.get("budget"))}{curve}
The recipe that produced this model (also in `recipe.yaml`; rerun it with `nlpipe run recipe recipe.yaml`):

```yaml
{recipe_yaml}
```

## Usage

{usage}

## Intended use and limitations

{limitations}
"""


EXAMPLES = {
    "token-classification": ('"ner"', '"Angela Merkel visited Paris on Monday."', ', aggregation_strategy="simple"'),
    "translation": ('"translation"', '"Ein Hund läuft über die Wiese."', ""),
    "summarization": ('"summarization"', '"Anna: Are we still on for lunch?\\nTom: Yes, 12:30."', ""),
    "causal-lm": ('"text-generation"', '"the company said", max_new_tokens=20', ""),
    "masked-lm": ('"fill-mask"', '"Angela Merkel visited [MASK] on Monday."', ""),
}


def _usage(recipe: Recipe, repo_id: str | None, remote_code: bool) -> str:
    """The card's usage section: with nlpipe, and (for an export with code) without it."""
    task, example, pipe_args = EXAMPLES[recipe.task]
    model = f'"{repo_id}"' if repo_id else '"path/to/run-folder"'
    with_nlpipe = f"""```python
import nlpipe  # registers nlpipe's models (and the translation/summarization pipelines)
from transformers import pipeline

pipe = pipeline({task}, model={model}{pipe_args})
print(pipe({example}))
```"""
    if not remote_code:
        return with_nlpipe
    if recipe.task in ("translation", "summarization"):
        # transformers 5 removed these pipeline tasks; generate() needs nothing but the model code.
        without = f"""```python
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained({model}, trust_remote_code=True)  # it reads config.json too
model = AutoModelForSeq2SeqLM.from_pretrained({model}, trust_remote_code=True)
inputs = tokenizer([{example}], return_tensors="pt")
print(tokenizer.batch_decode(model.generate(**inputs, num_beams=5, max_new_tokens=60), skip_special_tokens=True))
```"""
    else:
        without = f"""```python
from transformers import pipeline

pipe = pipeline({task}, model={model}, trust_remote_code=True{pipe_args})
print(pipe({example}))
```"""
    return (
        "Without nlpipe (the model code ships in this repository; read it before trusting it):\n\n"
        f"{without}\n\nWith nlpipe installed:\n\n{with_nlpipe}"
    )


def _decoding_note(recipe: Recipe) -> str:
    """For seq2seq runs: `generate()` decodes as the recipe's test set did (beam search), say so and how to stream."""
    if recipe.task not in ("translation", "summarization"):
        return ""
    saved = {k: v for k, v in recipe.generate.items() if k != "validation_num_beams"}
    if saved.get("num_beams", 1) <= 1:
        return ""
    listed = ", ".join(f"`{k}={v!r}`" for k, v in saved.items())
    return f"""

**Decoding.** `generation_config.json` holds this recipe's test-time decoding ({listed}), so a plain
`model.generate(**inputs)` and the pipelines use beam search with {saved["num_beams"]} beams. Pass `num_beams=1` for
greedy decoding, which streaming needs (`TextStreamer` does not support beam search):

```python
from transformers import TextStreamer

model.generate(**inputs, num_beams=1, streamer=TextStreamer(tokenizer, skip_special_tokens=True))
```"""


def write_model_card(run_dir: Path, recipe: Recipe, metrics: dict[str, Any], info: dict[str, Any]) -> Path:
    """Write README.md (and training_curve.png) into the run folder."""
    has_curve = plot_training_curve(run_dir, recipe.eval.metric) is not None
    path = run_dir / "README.md"
    path.write_text(model_card_text(recipe, metrics, info, has_curve), encoding="utf-8")
    return path
