"""Token classification (NER): words in, one IOB2 tag per word out, scored with seqeval (strict IOB2).

Every sub-token of a word is trained (the first with the word's tag, the rest with the matching
``I-`` tag), so raw-text inference — where a pre-tokenizer may split "U.S." into pieces — groups
pieces into one entity; evaluation reads each word's tag off its first sub-token.
"""

from __future__ import annotations

from typing import Any

import datasets
import torch

from ..data.catalog import CATALOG
from ..errors import NlpipeError
from ..metrics import compute_metric
from .base import Task, eval_batches


def continuation_tag(tag: str) -> str:
    """The tag of a word's later sub-tokens: B-X → I-X, others unchanged."""
    return "I-" + tag[2:] if tag.startswith("B-") else tag


class TokenClassificationTask(Task):
    name = "token-classification"
    data_kind = "ner"
    pipeline_tag = "token-classification"
    auto_class = "AutoModelForTokenClassification"

    def __init__(self, recipe: Any) -> None:
        super().__init__(recipe)
        self.labels: list[str] = []

    def setup(self, data: datasets.DatasetDict, source_name: str) -> None:
        entry = CATALOG.get(source_name)
        seen = sorted({tag for tags in data["train"]["tags"] for tag in tags})
        if entry is not None and entry.labels and set(seen) <= set(entry.labels):
            labels = list(entry.labels)
        else:
            labels = sorted(seen, key=lambda tag: (tag != "O", tag[2:], tag))
        known = set(labels)
        for split in ("validation", "test"):
            for index, tags in enumerate(data[split]["tags"]):
                unknown = [t for t in tags if t not in known]
                if unknown:
                    raise NlpipeError(
                        f"data set '{source_name}', split '{split}', sentence {index + 1}: label '{unknown[0]}' "
                        f"does not occur in the training split (labels: {', '.join(labels)}); fix the data"
                    )
        self.labels = labels

    def set_labels_from_config(self, config: Any) -> None:
        """Take the label set from a trained model (evaluation of a saved run)."""
        self.labels = [config.id2label[i] for i in range(len(config.id2label))]

    def tokenizer_texts(self, train: datasets.Dataset) -> list[str]:
        return [" ".join(tokens) for tokens in train["tokens"]]

    def model_values(self, tokenizer: Any) -> dict[str, Any]:
        return {
            **super().model_values(tokenizer),
            "id2label": dict(enumerate(self.labels)),
            "label2id": {label: i for i, label in enumerate(self.labels)},
        }

    def encode(self, dataset: datasets.Dataset, tokenizer: Any, split: str) -> datasets.Dataset:
        label2id = {label: i for i, label in enumerate(self.labels)}
        max_length = self.recipe.data.max_length

        def encode_batch(batch: dict[str, list]) -> dict[str, list]:
            enc = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True, max_length=max_length)
            all_labels, all_first = [], []
            for row, tags in enumerate(batch["tags"]):
                word_ids = enc.word_ids(row)
                labels, first = [], [-1] * len(tags)
                previous = None
                for position, word in enumerate(word_ids):
                    if word is None:
                        labels.append(-100)
                    elif word != previous:
                        labels.append(label2id[tags[word]])
                        first[word] = position
                    else:
                        labels.append(label2id[continuation_tag(tags[word])])
                    previous = word
                all_labels.append(labels)
                all_first.append(first)
            return {
                "input_ids": enc["input_ids"],
                "labels": all_labels,
                "first_piece": all_first,
                "length": [len(ids) for ids in enc["input_ids"]],
            }

        return dataset.map(encode_batch, batched=True, remove_columns=dataset.column_names, desc=f"encode {split}")

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        longest = max(len(f["input_ids"]) for f in features)
        pad = self.pad_token_id
        input_ids = torch.full((len(features), longest), pad, dtype=torch.long)
        labels = torch.full((len(features), longest), -100, dtype=torch.long)
        mask = torch.zeros((len(features), longest), dtype=torch.long)
        for row, f in enumerate(features):
            n = len(f["input_ids"])
            input_ids[row, :n] = torch.tensor(f["input_ids"])
            labels[row, :n] = torch.tensor(f["labels"])
            mask[row, :n] = 1
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}

    @staticmethod
    def decode(model: Any, logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Best label id per token: the model's own decoder (CRF Viterbi) when it has one, else argmax."""
        inner = getattr(model, "module", model)
        if hasattr(inner, "decode"):
            return inner.decode(logits, attention_mask)
        return logits.argmax(dim=-1)

    def predict_word_tags(
        self, model: Any, encoded: datasets.Dataset, accelerator: Any, batch_size: int
    ) -> list[list[str]]:
        """Predicted IOB2 tag per word for every example (words lost to truncation get "O")."""
        predictions: list[tuple[int, list[str]]] = []
        columns = ["input_ids", "labels", "first_piece", "length"]
        for indices, batch in eval_batches(self, encoded, batch_size, accelerator, columns):
            batch = {k: v for k, v in batch.items() if k != "labels"}
            logits = model(**batch).logits
            paths = self.decode(model, logits, batch["attention_mask"]).cpu()
            for row, index in enumerate(indices.tolist()):
                predictions.append((index, paths[row].tolist()))
        if accelerator is not None:
            predictions = accelerator.gather_for_metrics(predictions, use_gather_object=True)
        first_pieces = encoded["first_piece"]
        result: list[list[str]] = [[] for _ in range(len(encoded))]
        for index, path in predictions:
            result[index] = [self.labels[path[p]] if p >= 0 else "O" for p in first_pieces[index]]
        return result

    def evaluate(
        self, model: Any, encoded: datasets.Dataset, raw: datasets.Dataset, accelerator: Any, batch_size: int
    ) -> dict[str, float]:
        predicted = self.predict_word_tags(model, encoded, accelerator, batch_size)
        scores = compute_metric("seqeval", predictions=predicted, references=raw["tags"])
        return {k: float(v) for k, v in scores.items() if isinstance(v, (int, float))}


def tag_words(model: Any, tokenizer: Any, text: str) -> list[dict[str, Any]]:
    """Tag raw text: one entry per word (as the tokenizer's pre-tokenizer splits it) with its
    character span, predicted IOB2 tag and probability, read off the word's first sub-token."""
    encoding = tokenizer(text, return_offsets_mapping=True, truncation=True, return_tensors="pt")
    offsets = encoding.pop("offset_mapping")[0].tolist()
    word_ids = encoding.word_ids(0)
    with torch.no_grad():
        logits = model(**{k: v for k, v in encoding.items() if k in ("input_ids", "attention_mask")}).logits
        path = TokenClassificationTask.decode(model, logits, encoding["attention_mask"])[0].tolist()
        probs = logits.float().softmax(-1)[0]
    id2label = model.config.id2label
    words: list[dict[str, Any]] = []
    previous = None
    for position, word in enumerate(word_ids):
        if word is None:
            continue
        start, end = offsets[position]
        if word != previous:
            label = id2label[path[position]]
            words.append({"word": text[start:end], "start": start, "end": end, "tag": label,
                          "score": float(probs[position, path[position]])})
        else:
            words[-1]["end"] = end
            words[-1]["word"] = text[words[-1]["start"] : end]
        previous = word
    return words


def group_entities(text: str, words: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group tagged words into IOB2 entities: ``{"entity_group", "word", "start", "end", "score"}``.

    An ``I-X`` that does not continue an ``X`` entity starts a new one (lenient, like the pipeline).
    """
    entities: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for w in words:
        tag = w["tag"]
        kind = tag[2:] if tag[:2] in ("B-", "I-") else None
        if kind is None:
            current = None
            continue
        if tag.startswith("I-") and current is not None and current["entity_group"] == kind:
            current["end"] = w["end"]
            current["scores"].append(w["score"])
        else:
            current = {"entity_group": kind, "start": w["start"], "end": w["end"], "scores": [w["score"]]}
            entities.append(current)
    for e in entities:
        scores = e.pop("scores")
        e["word"] = text[e["start"] : e["end"]]
        e["score"] = sum(scores) / len(scores)
    return [{k: e[k] for k in ("entity_group", "score", "word", "start", "end")} for e in entities]
