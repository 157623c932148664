"""Token classification (NER): words in, one IOB2 tag per word out, scored with seqeval
with conlleval's chunk rules (headline ``f1``) and in strict IOB2 mode (``f1_strict``).

Every sub-token of a word is trained (the first with the word's tag, the rest with the matching
``I-`` tag), so raw-text inference — where a pre-tokenizer may split "U.S." into pieces — groups
pieces into one entity; evaluation reads each word's tag off its first sub-token.
"""

from __future__ import annotations

import itertools
from typing import Any

import datasets
import numpy as np
import torch

from ..data.catalog import CATALOG
from ..data.readers import check_iob_tag
from ..errors import NlpipeError, shorten
from ..metrics import compute_metric
from .base import Task, concatenated, eval_batches, pad_rows


def token_char_ids(
    text_spans: list[str | None], char_to_id: dict[str, int], max_chars: int
) -> list[list[int]]:
    """Character ids per token from each token's surface text; ``None`` (special tokens) gives ``[]``.

    Uses the model's own mapping (`RnnTaggerConfig.char_to_id`) and truncation rule
    (`encode_words_to_char_ids`), so training, `nlpipe predict` and the ``ner`` pipeline agree.
    """
    from ..models.rnn_tagger.char_encoder import encode_words_to_char_ids
    from ..models.rnn_tagger.configuration_rnn_tagger import RnnTaggerConfig

    surfaces = [span for span in text_spans if span is not None]
    encoded = iter(encode_words_to_char_ids(surfaces, char_to_id, max_chars, RnnTaggerConfig.CHAR_UNK_ID))
    return [[] if span is None else next(encoded) for span in text_spans]


def flat_char_ids(token_chars: list[list[int]]) -> tuple[list[int], list[int]]:
    """One row's per-token char ids as (all ids in order, ids per token): how the encoded dataset keeps them.

    Flat rows keep the training loader cheap: converting a nested list-of-lists column from the Arrow table
    cost ≈ 1.7 ms per 32-sentence batch, the two flat columns ≈ 0.3 ms (glibc malloc; docs/performance.md).
    """
    return list(itertools.chain.from_iterable(token_chars)), [len(chars) for chars in token_chars]


def pad_char_ids(char_ids: list[list[int]], char_lengths: list[list[int]], num_tokens: int) -> torch.Tensor:
    """Pad flat per-example char ids into a (B, T, C) long tensor of zeros (the padding id).

    ``char_ids[b]`` holds all character ids of example b's tokens in order and ``char_lengths[b]`` how many
    of them each token has (`flat_char_ids`). All ids go through numpy in one pass and land with two masked
    copies, not one small tensor per word: per-word tensors made collation ≈ 6 % of a tagger's training
    step (`benchmarks/perf_profile.py`).
    """
    tokens_per_row = np.fromiter(map(len, char_lengths), dtype=np.int64, count=len(char_lengths))
    lengths = concatenated(char_lengths, int(tokens_per_row.sum()))
    longest = int(lengths.max(initial=1)) or 1
    out = np.zeros((len(char_lengths), num_tokens, longest), dtype=np.int64)
    if lengths.any():
        per_token = np.zeros((len(lengths), longest), dtype=np.int64)
        # Row-major masked assignment: each token's ids land left-aligned in its own row, in order.
        per_token[np.arange(longest) < lengths[:, None]] = concatenated(char_ids, int(lengths.sum()))
        out[np.arange(num_tokens) < tokens_per_row[:, None]] = per_token
    return torch.from_numpy(out)


def iob2_label_set(tags: set[str] | list[str]) -> list[str]:
    """The full IOB2 label set of the entity types in ``tags``: ``O``, then ``B-X``, ``I-X`` per type (sorted).

    Both tags of every type are included even if the data only has one of them (a type that only ever
    spans one word has no ``I-X`` in the data, but a word split into sub-tokens needs it, and so may
    the validation data).
    """
    types = sorted({tag[2:] for tag in tags if tag != "O"})
    return ["O"] + [f"{prefix}-{kind}" for kind in types for prefix in ("B", "I")]


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
        # Character features: on when the recipe's model has a char encoder; the vocabulary comes from the
        # training split (`setup`) or from a trained model's config (`set_labels_from_config`).
        self.uses_chars = recipe.model.get("char_encoder", "none") not in (None, "none")
        self.char_vocab: list[str] | None = None
        self.max_word_chars = int(recipe.model.get("max_word_chars", 20))

    def setup(self, data: datasets.DatasetDict, source_name: str) -> None:
        entry = CATALOG.get(source_name)
        for split in ("train", "validation", "test"):
            for index, tags in enumerate(data[split]["tags"]):
                for tag in tags:
                    problem = check_iob_tag(tag)
                    if problem is not None:
                        raise NlpipeError(
                            f"data set '{source_name}', split '{split}', sentence {index + 1}: tag {shorten(tag)} "
                            f"is not an IOB tag; {problem}"
                        )
        seen = {tag for tags in data["train"]["tags"] for tag in tags}
        if entry is not None and entry.labels and seen <= set(entry.labels):
            labels = list(entry.labels)
        else:
            labels = iob2_label_set(seen)
        known = set(labels)
        for split in ("validation", "test"):
            for index, tags in enumerate(data[split]["tags"]):
                unknown = [t for t in tags if t not in known]
                if unknown:
                    raise NlpipeError(
                        f"data set '{source_name}', split '{split}', sentence {index + 1}: label '{unknown[0]}' "
                        f"does not occur in the training split (labels: {shorten(', '.join(labels), quote=False)}); "
                        "fix the data"
                    )
        self.labels = labels
        if self.uses_chars:
            # Every character of the training words, most frequent first (ties by code point): stable ids.
            counts: dict[str, int] = {}
            for tokens in data["train"]["tokens"]:
                for token in tokens:
                    for char in token:
                        counts[char] = counts.get(char, 0) + 1
            self.char_vocab = sorted(counts, key=lambda c: (-counts[c], c))

    def set_labels_from_config(self, config: Any) -> None:
        """Take the label set (and the char vocabulary) from a trained model (evaluation of a saved run)."""
        self.labels = [config.id2label[i] for i in range(len(config.id2label))]
        if getattr(config, "char_encoder", "none") != "none":
            self.uses_chars = True
            self.char_vocab = list(config.char_vocab or [])
            self.max_word_chars = config.max_word_chars

    def char_to_id(self) -> dict[str, int]:
        """Character → id, as `RnnTaggerConfig.char_to_id` maps it (ids from 2)."""
        return {char: index + 2 for index, char in enumerate(self.char_vocab or [])}

    def tokenizer_texts(self, train: datasets.Dataset) -> list[str]:
        return [" ".join(tokens) for tokens in train["tokens"]]

    def model_values(self, tokenizer: Any) -> dict[str, Any]:
        values = {
            **super().model_values(tokenizer),
            "id2label": dict(enumerate(self.labels)),
            "label2id": {label: i for i, label in enumerate(self.labels)},
        }
        if self.recipe.model.get("type") == "rnn_tagger":
            values["unk_token_id"] = tokenizer.unk_token_id  # for word dropout
            if self.uses_chars:
                values["char_vocab"] = list(self.char_vocab or [])
        return values

    def encode(self, dataset: datasets.Dataset, tokenizer: Any, split: str) -> datasets.Dataset:
        label2id = {label: i for i, label in enumerate(self.labels)}
        max_length = self.recipe.data.max_length
        char_to_id = self.char_to_id()
        teacher = None
        if split == "train" and self.recipe.train.teacher:
            from ..distill import load_teacher, teacher_word_distributions

            teacher = load_teacher(self.recipe.train.teacher, self.labels, self.recipe.source)

        def encode_batch(batch: dict[str, list]) -> dict[str, list]:
            enc = tokenizer(
                batch["tokens"], is_split_into_words=True, truncation=True, max_length=max_length,
                return_offsets_mapping=self.uses_chars,
            )
            all_labels, all_first, all_chars, all_char_lengths = [], [], [], []
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
                if self.uses_chars:
                    # With is_split_into_words, offsets are relative to each word: slice the word itself.
                    words = batch["tokens"][row]
                    spans = [None if word is None else words[word][start:end]
                             for word, (start, end) in zip(word_ids, enc["offset_mapping"][row], strict=True)]
                    chars, char_lengths = flat_char_ids(token_char_ids(spans, char_to_id, self.max_word_chars))
                    all_chars.append(chars)
                    all_char_lengths.append(char_lengths)
            features = {
                "input_ids": enc["input_ids"],
                "labels": all_labels,
                "first_piece": all_first,
                "length": [len(ids) for ids in enc["input_ids"]],
            }
            if self.uses_chars:
                features["char_ids"] = all_chars
                features["char_lengths"] = all_char_lengths
            if teacher is not None:  # train.teacher: the teacher's distribution at each word's first piece
                dists = teacher_word_distributions(*teacher, batch["tokens"], self.recipe.train.distill_temperature,
                                                   max_length)
                zeros = [0.0] * len(self.labels)
                features["soft_labels"] = [
                    [zeros if word is None or word == prev or dist[word] is None else dist[word]
                     for word, prev in zip(enc.word_ids(row), [None, *enc.word_ids(row)[:-1]], strict=True)]
                    for row, dist in enumerate(dists)
                ]
            return features

        return dataset.map(encode_batch, batched=True, remove_columns=dataset.column_names, desc=f"encode {split}")

    columns_not_for_training = ("first_piece",)

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        longest = max(len(f["input_ids"]) for f in features)
        input_ids, mask = pad_rows([f["input_ids"] for f in features], longest, self.pad_token_id)
        labels, _ = pad_rows([f["labels"] for f in features], longest, -100)
        batch = {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
        if "char_ids" in features[0]:
            batch["char_ids"] = pad_char_ids([f["char_ids"] for f in features], [f["char_lengths"] for f in features],
                                             longest)
        if "soft_labels" in features[0]:
            soft = torch.zeros((len(features), longest, len(self.labels)))
            for row, f in enumerate(features):
                soft[row, : len(f["soft_labels"])] = torch.tensor(f["soft_labels"])
            batch["soft_labels"] = soft
        return batch

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The gold-tag loss; with ``train.teacher`` mixed with the KL to the teacher (nlpipe/distill.py)."""
        if "soft_labels" not in batch:
            return model(**batch).loss
        from ..distill import distillation_loss

        soft = batch["soft_labels"]
        out = model(**{k: v for k, v in batch.items() if k != "soft_labels"})
        t = self.recipe.train
        return distillation_loss(out.loss, out.logits, soft, t.distill_alpha, t.distill_temperature)

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
        if "char_ids" in encoded.column_names:
            columns += ["char_ids", "char_lengths"]
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
    inputs = {k: v for k, v in encoding.items() if k in ("input_ids", "attention_mask")}
    config = model.config
    if getattr(config, "char_encoder", "none") != "none":
        # Same characters as in training: the token's surface text (here sliced from the raw text).
        spans = [None if word is None else text[start:end] for word, (start, end) in zip(word_ids, offsets, strict=True)]
        chars, char_lengths = flat_char_ids(token_char_ids(spans, config.char_to_id(), config.max_word_chars))
        inputs["char_ids"] = pad_char_ids([chars], [char_lengths], len(word_ids))
    with torch.no_grad():
        logits = model(**inputs).logits
        path = TokenClassificationTask.decode(model, logits, encoding["attention_mask"])[0].tolist()
        if hasattr(model, "decode_scores"):  # CRF marginals, consistent with the ner pipeline
            probs = model.decode_scores(logits, encoding["attention_mask"])[0].exp()
        else:
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
