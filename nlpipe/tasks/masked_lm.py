"""Masked-language-model pretraining (BERT's objective) on unlabelled text, as a task like the others.

The text is the *training* split of the recipe's data set with its labels dropped (CoNLL sentences,
WikiText-2 lines, both sides of a parallel corpus, SAMSum dialogues and summaries), plus the
training splits of ``data.extra_datasets`` and every line of ``data.text_files`` (plain text or
gzip, one text per line; a relative path is looked up in ``--data-dir`` first). The corpora's own
validation and test splits are never read, so pretraining cannot see the evaluation text of a
downstream task: the validation (and test) split here is a held-out slice of the training text
(`HELD_OUT_FRACTION`, at most `MAX_HELD_OUT` texts, chosen with the run's seed).

Each text is tokenized with the recipe's tokenizer and cut into windows of ``data.max_length``
tokens (long WikiText paragraphs become several examples). Batches are masked as in
``run_mlm.py``: transformers' `DataCollatorForLanguageModeling` with ``mlm_probability=0.15`` and
whole-word masking (every sub-token of a chosen word is masked, from the tokenizer's offsets).
The model is transformers' own ``BertForMaskedLM`` (registry ``model.type: bert``). Training applies its
prediction head to the masked positions only (`MaskedLmTask.loss`): the same loss, a seventh of the head's cost.

Evaluation masks the held-out text with a fixed seed (the same tokens every time, so values are
comparable across evaluations) and reports ``perplexity`` over the masked tokens (the offline
``perplexity`` module), ``nll_per_token`` and ``masked_accuracy``.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import datasets
import torch
from torch.nn import functional as F

from ..errors import NlpipeError
from ..metrics import compute_metric
from ..model_registry import build_model
from .base import Task

MLM_PROBABILITY = 0.15
HELD_OUT_FRACTION = 0.02
MAX_HELD_OUT = 2000
_FEATURES = ("input_ids", "special_tokens_mask", "offset_mapping")


def texts_of(split: datasets.Dataset) -> list[str]:
    """The text of a split with its labels dropped, whatever kind of data set it is."""
    columns = split.column_names
    if "text" in columns:
        texts = list(split["text"])
    elif "tokens" in columns:
        texts = [" ".join(tokens) for tokens in split["tokens"]]
    elif "source" in columns:
        texts = [*split["source"], *split["target"]]
    else:
        raise NlpipeError(f"masked-lm: no text column in a split with columns {', '.join(columns)}")
    return [text.strip() for text in texts if text and text.strip()]


def _text_file(name: str, data_dir: str | Path | None) -> Path:
    """A ``data.text_files`` entry: under ``--data-dir`` when it exists there, else as given."""
    path = Path(name).expanduser()
    if not path.is_absolute() and data_dir is not None and (Path(data_dir) / path).is_file():
        return Path(data_dir) / path
    return path


class _SelectedPositionsHead(torch.nn.Module):
    """A masked-LM head applied to the `selected` positions of (batch, length, hidden) states only."""

    def __init__(self, head: torch.nn.Module, selected: torch.Tensor) -> None:
        super().__init__()
        self.head, self.selected = head, selected

    def forward(self, sequence_output: torch.Tensor) -> torch.Tensor:
        return self.head(sequence_output[self.selected])


class MaskedLmTask(Task):
    name = "masked-lm"
    data_kind = "lm"
    pipeline_tag = "fill-mask"
    auto_class = "AutoModelForMaskedLM"

    def __init__(self, recipe: Any) -> None:
        super().__init__(recipe)
        self.collator: Any = None
        self.eval_collator: Any = None

    # -- data -----------------------------------------------------------------------------------
    def corpus(self, dataset: datasets.DatasetDict, *, data: str | None = None,
               data_dir: str | Path | None = None) -> datasets.DatasetDict:
        """Unlabelled training text; validation = test = a held-out slice of it (see the module doc)."""
        from ..data.catalog import load_data
        from ..data.readers import read_lines

        d = self.recipe.data
        texts = texts_of(dataset["train"])
        for name in d.extra_datasets:
            extra = load_data(name, source=data, data_dir=data_dir, seed=self.recipe.train.seed,
                              max_train_examples=d.max_train_examples)
            texts += texts_of(extra["train"])
        for name in d.text_files:
            path = _text_file(name, data_dir)
            if not path.is_file():
                raise NlpipeError(f"{self.recipe.source}: key 'data.text_files': {name} not found (looked in "
                                  f"{data_dir or '.'} and the current folder); give an existing text file")
            texts += [r["text"].strip() for r in read_lines(path) if r["text"].strip()]
        if len(texts) < 2:
            raise NlpipeError(f"{self.recipe.source}: masked-lm needs at least 2 texts of training data, got {len(texts)}")
        order = list(range(len(texts)))
        random.Random(self.recipe.train.seed).shuffle(order)
        held = min(MAX_HELD_OUT, max(1, int(len(texts) * HELD_OUT_FRACTION)))
        held_out = datasets.Dataset.from_dict({"text": [texts[i] for i in sorted(order[:held])]})
        if d.max_eval_examples:
            held_out = held_out.select(range(min(d.max_eval_examples, len(held_out))))
        train = datasets.Dataset.from_dict({"text": [texts[i] for i in sorted(order[held:])]})
        return datasets.DatasetDict({"train": train, "validation": held_out, "test": held_out})

    def tokenizer_texts(self, train: datasets.Dataset) -> list[str]:
        return list(train["text"])

    def bind_tokenizer(self, tokenizer: Any) -> None:
        from transformers import DataCollatorForLanguageModeling

        super().bind_tokenizer(tokenizer)
        if tokenizer.mask_token is None:
            raise NlpipeError(f"{self.recipe.source}: key 'tokenizer': masked-lm needs a tokenizer with a mask "
                              "token; use spec wordpiece (it has [MASK])")
        settings = {"tokenizer": tokenizer, "mlm_probability": MLM_PROBABILITY, "whole_word_mask": True,
                    "mask_replace_prob": 1.0, "random_replace_prob": 0.0}
        # Training masks from the global RNG (part of checkpoints, so a resume masks identically);
        # evaluation from its own fixed seed (the same masked tokens at every evaluation).
        self.collator = DataCollatorForLanguageModeling(**settings)
        self.eval_collator = DataCollatorForLanguageModeling(**settings, seed=self.recipe.train.seed)

    def encode(self, dataset: datasets.Dataset, tokenizer: Any, split: str) -> datasets.Dataset:
        max_length = self.recipe.data.max_length

        def encode_batch(batch: dict[str, list]) -> dict[str, list]:
            enc = tokenizer(batch["text"], truncation=True, max_length=max_length, return_overflowing_tokens=True,
                            return_special_tokens_mask=True, return_offsets_mapping=True)
            return {"input_ids": enc["input_ids"], "special_tokens_mask": enc["special_tokens_mask"],
                    "offset_mapping": enc["offset_mapping"], "length": [len(ids) for ids in enc["input_ids"]]}

        return dataset.map(encode_batch, batched=True, remove_columns=dataset.column_names, desc=f"encode {split}")

    def collate(self, features: list[dict[str, Any]], collator: Any = None) -> dict[str, torch.Tensor]:
        """Pad and mask a batch: ``input_ids`` (masked), ``attention_mask``, ``labels`` (-100 where unmasked)."""
        collator = collator or self.collator
        longest = max(len(f["input_ids"]) for f in features)
        rows = [{k: f[k] for k in _FEATURES} for f in features]
        for row in rows:  # tokenizer.pad pads ids and masks, not offsets; padding is special, so never masked
            row["offset_mapping"] = [list(o) for o in row["offset_mapping"]] + [[0, 0]] * (longest - len(row["input_ids"]))
        return dict(collator(rows))

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """BertForMaskedLM's own loss (mean cross-entropy over the masked tokens), with the prediction head run
        on the masked positions only. BertForMaskedLM runs its head (hidden → vocabulary, 16k rows) on every
        position and then ignores 85 % of them; on the pretrain-bert model that head is ≈ 2.5× the encoder's
        matrix products, so training steps are ≈ 2.5× faster this way. The head is swapped in for this call
        only and `model` is still called as a whole, so checkpoints, DDP and the autocast that Accelerate wraps
        around ``model.forward`` see the usual model."""
        inner = getattr(model, "module", model)  # DDP keeps the model in .module
        head = getattr(inner, "cls", None)
        labels = batch.get("labels")
        if labels is None or not isinstance(head, torch.nn.Module) or not hasattr(inner, "bert"):
            return model(**batch).loss
        selected = labels != -100
        inner.cls = _SelectedPositionsHead(head, selected)
        try:
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        finally:
            inner.cls = head
        return torch.nn.functional.cross_entropy(logits.float(), labels[selected])

    # -- model ----------------------------------------------------------------------------------
    def build_model(self, tokenizer: Any) -> Any:
        settings = dict(self.recipe.model)
        return build_model(settings.pop("type"), settings, auto_class=self.auto_class,
                           **self.model_values(tokenizer))

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate(
        self, model: Any, encoded: datasets.Dataset, raw: datasets.Dataset, accelerator: Any, batch_size: int
    ) -> dict[str, float]:
        """Masked-token perplexity and accuracy on the held-out text (masked with a fixed seed)."""
        if self.eval_collator is not None:
            self.eval_collator.create_rng("pt")  # the same masks at every evaluation
        device = next(getattr(model, "module", model).parameters()).device
        nlls: list[float] = []
        counts: list[int] = []
        correct = 0
        for start in range(0, len(encoded), batch_size):
            rows = [encoded[i] for i in range(start, min(start + batch_size, len(encoded)))]
            batch = {k: v.to(device) for k, v in self.collate(rows, self.eval_collator).items()}
            labels = batch.pop("labels")
            logits = model(**batch).logits.float()
            chosen = labels != -100
            if not chosen.any():
                continue
            nlls.append(float(F.cross_entropy(logits[chosen], labels[chosen], reduction="sum")))
            counts.append(int(chosen.sum()))
            correct += int((logits[chosen].argmax(-1) == labels[chosen]).sum())
        if not counts:
            return {"perplexity": math.inf, "nll_per_token": math.inf, "masked_accuracy": 0.0}
        scores = compute_metric("perplexity", predictions=nlls, references=counts)
        out = {k: float(v) for k, v in scores.items() if isinstance(v, (int, float))}
        out["masked_accuracy"] = 100.0 * correct / sum(counts)
        return out

    # -- prediction -----------------------------------------------------------------------------
    def predict_texts(self, model: Any, tokenizer: Any, texts: list[str]) -> list[dict[str, Any]]:
        """Fill each text's mask token: ``{"text", "predictions", "output"}`` (top 5 of transformers' fill-mask).

        Raises:
            NlpipeError: a text without the tokenizer's mask token.
        """
        from transformers import pipeline

        fill = pipeline("fill-mask", model=model, tokenizer=tokenizer)
        results = []
        for text in texts:
            if tokenizer.mask_token not in text:
                raise NlpipeError(f"input '{text}': no {tokenizer.mask_token}; put {tokenizer.mask_token} where a "
                                  "word should be predicted")
            predictions = fill(text, top_k=5)
            if predictions and isinstance(predictions[0], list):  # several masks: one list per mask
                predictions = predictions[0]
            best = predictions[0]["sequence"] if predictions else text
            results.append({"text": text, "predictions": predictions, "output": best})
        return results
