"""Sequence-to-sequence tasks: translation (sacreBLEU + chrF) and summarization (ROUGE).

Both read ``{"source", "target"}`` records, share one joint tokenizer trained on sources and
targets, and train any ``AutoModelForSeq2SeqLM`` (nlpipe's ``rnn_seq2seq`` or transformers'
``marian``) with teacher forcing. Evaluation generates, decodes to detokenized text and scores it.

The recipe's ``generate:`` section sets the decoding. Accepted keys (anything else is an error):

==========================  =====================================================================
``num_beams``               beam width of the final (test) evaluation and of ``predict``/pipelines
``max_new_tokens``          longest output, in tokens (default 64 translation, 96 summarization)
``min_new_tokens``          shortest output
``length_penalty``          beam score exponent on length (> 1 favours longer outputs)
``no_repeat_ngram_size``    forbid repeating any n-gram of this size
``repetition_penalty``      CTRL-style penalty on already generated tokens
``early_stopping``          beam search stops when ``num_beams`` hypotheses are finished
``do_sample``, ``temperature``, ``top_k``, ``top_p``    sampling instead of search
``validation_num_beams``    beam width on the validation split (default 1: greedy, fast). This
                            decodes the evaluations during training that select the best
                            checkpoint, and the final validation score; test uses ``num_beams``.
==========================  =====================================================================

The settings (except ``validation_num_beams``) are also written into the model's
``generation_config``, so ``nlpipe predict``, ``model.generate()`` and the ``translation`` /
``summarization`` / ``text2text-generation`` pipelines decode exactly like the test evaluation.
"""

from __future__ import annotations

import re
from typing import Any

import datasets
import torch
import torch.nn.functional as F

from ..errors import NlpipeError, shorten
from ..metrics import compute_metric
from ..model_registry import build_model
from .base import Task, eval_batches, pad_rows

GENERATE_KEYS: dict[str, type | tuple[type, ...]] = {
    "num_beams": int,
    "max_new_tokens": int,
    "min_new_tokens": int,
    "length_penalty": (int, float),
    "no_repeat_ngram_size": int,
    "repetition_penalty": (int, float),
    "early_stopping": bool,
    "do_sample": bool,
    "temperature": (int, float),
    "top_k": int,
    "top_p": (int, float),
    "validation_num_beams": int,
}
"""Recipe ``generate:`` keys and their types (see the module docstring)."""

LENGTH_BUCKETS: tuple[tuple[int, int | None], ...] = ((1, 10), (11, 20), (21, None))
"""Source-length buckets (whitespace words) for BLEU by length: keys ``sacrebleu_len_01_10`` ..."""


def validate_generate_settings(settings: dict[str, Any], source: str = "recipe") -> dict[str, Any]:
    """Check a recipe's ``generate:`` section; return it unchanged.

    Raises:
        NlpipeError: an unknown key (named, with the accepted ones listed) or a value of the wrong type
            or range.
    """
    if not isinstance(settings, dict):
        raise NlpipeError(f"{source}: key 'generate': expected a mapping of generation settings")
    for key, value in settings.items():
        if key not in GENERATE_KEYS:
            raise NlpipeError(
                f"{source}: unknown key 'generate.{key}'; accepted keys: {', '.join(GENERATE_KEYS)}"
            )
        expected = GENERATE_KEYS[key]
        if isinstance(value, bool) and expected is not bool or not isinstance(value, expected):
            names = expected.__name__ if isinstance(expected, type) else " or ".join(t.__name__ for t in expected)
            raise NlpipeError(f"{source}: key 'generate.{key}': expected {names}, got {shorten(value)}")
        positive = ("num_beams", "max_new_tokens", "validation_num_beams", "top_k", "temperature")
        if key in positive and value <= 0:
            raise NlpipeError(f"{source}: key 'generate.{key}': must be > 0, got {shorten(value)}")
        if key in ("min_new_tokens", "no_repeat_ngram_size") and value < 0:
            raise NlpipeError(f"{source}: key 'generate.{key}': must be >= 0, got {shorten(value)}")
        if key == "top_p" and not 0 < value <= 1:
            raise NlpipeError(f"{source}: key 'generate.{key}': must be in (0, 1], got {shorten(value)}")
    return settings


def bucket_key(low: int, high: int | None) -> str:
    """Metric key of a source-length bucket: ``sacrebleu_len_01_10``, ``sacrebleu_len_21_plus``."""
    return f"sacrebleu_len_{low:02d}_{high:02d}" if high is not None else f"sacrebleu_len_{low:02d}_plus"


def bleu_by_source_length(sources: list[str], predictions: list[str], references: list[str]) -> dict[str, float]:
    """sacreBLEU per source-length bucket (:data:`LENGTH_BUCKETS`, whitespace words); empty buckets are left out.

    Also returns ``n_len_..`` (examples per bucket) so a reader can judge how noisy each score is.
    """
    scores: dict[str, float] = {}
    for low, high in LENGTH_BUCKETS:
        rows = [i for i, s in enumerate(sources) if len(s.split()) >= low and (high is None or len(s.split()) <= high)]
        if not rows:
            continue
        key = bucket_key(low, high)
        result = compute_metric("sacrebleu", [predictions[i] for i in rows], [references[i] for i in rows])
        scores[key] = float(result["sacrebleu"])
        scores["n" + key[len("sacrebleu"):]] = float(len(rows))
    return scores


_TURN = re.compile(r"\s*\n\s*")


def lead_summary(dialogue: str, turns: int = 3) -> str:
    """The lead baseline of dialogue summarization: the first `turns` turns (lines) of the dialogue.

    SAMSum dialogues have one ``Speaker: text`` turn per line (``\\r\\n`` or ``\\n``); the turns are
    joined with newlines so ROUGE-Lsum sees one sentence per turn.
    """
    lines = [line for line in _TURN.split(dialogue.strip()) if line]
    return "\n".join(lines[:turns])


class Seq2SeqTask(Task):
    """Shared hooks of translation and summarization (see the module docstring)."""

    auto_class = "AutoModelForSeq2SeqLM"
    default_max_new_tokens = 64

    def __init__(self, recipe: Any) -> None:
        super().__init__(recipe)
        validate_generate_settings(recipe.generate, recipe.source)
        self._split_of: dict[int, tuple[str, datasets.Dataset]] = {}

    # -- data -----------------------------------------------------------------------------------
    def setup(self, data: datasets.DatasetDict, source_name: str) -> None:
        for split in data:
            missing = {"source", "target"} - set(data[split].column_names)
            if missing:
                raise NlpipeError(
                    f"data set '{source_name}', split '{split}': needs 'source' and 'target' columns "
                    f"(missing {', '.join(sorted(missing))}); this task reads parallel text"
                )

    def tokenizer_texts(self, train: datasets.Dataset) -> list[str]:
        """Sources and targets: one joint vocabulary (shared or tied embeddings, copying)."""
        return list(train["source"]) + list(train["target"])

    def bind_tokenizer(self, tokenizer: Any) -> None:
        super().bind_tokenizer(tokenizer)
        if tokenizer.eos_token_id is None:
            raise NlpipeError(
                f"{self.recipe.source}: key 'tokenizer.spec': a seq2seq tokenizer needs an eos_token "
                "(use a spec with template: eos, e.g. bpe or sentencepiece)"
            )
        # Saved with the tokenizer: pipelines and `predict` then truncate sources like training did.
        tokenizer.model_max_length = self.recipe.data.max_length

    def encode(self, dataset: datasets.Dataset, tokenizer: Any, split: str) -> datasets.Dataset:
        data = self.recipe.data
        eos = tokenizer.eos_token_id

        def encode_batch(batch: dict[str, list]) -> dict[str, list]:
            sources = tokenizer(batch["source"], truncation=True, max_length=data.max_length)["input_ids"]
            targets = tokenizer(batch["target"], truncation=True, max_length=data.max_target_length)["input_ids"]
            # The target must end in eos (the model learns to stop); the tokenizer template adds it.
            targets = [ids if ids and ids[-1] == eos else ids[: data.max_target_length - 1] + [eos] for ids in targets]
            return {"input_ids": sources, "labels": targets, "length": [len(ids) for ids in sources]}

        encoded = dataset.map(encode_batch, batched=True, remove_columns=dataset.column_names, desc=f"encode {split}")
        self._split_of[id(encoded)] = (split, encoded)  # keep the object alive so its id stays unique
        return encoded

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        source_len = max(len(f["input_ids"]) for f in features)
        target_len = max(len(f["labels"]) for f in features)
        input_ids, mask = pad_rows([f["input_ids"] for f in features], source_len, self.pad_token_id)
        labels, _ = pad_rows([f["labels"] for f in features], target_len, -100)
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}

    def count_tokens(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["attention_mask"].sum()) + int((batch["labels"] != -100).sum())

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean target-token cross-entropy; with ``train.label_smoothing`` the smoothed one.

        Smoothing needs the logits, so the model is called without labels (its own loss would be
        computed and thrown away), with the decoder inputs it would build from them itself."""
        smoothing = self.recipe.train.label_smoothing
        if not smoothing:
            return model(**batch).loss
        labels = batch["labels"]
        inner = getattr(model, "module", model)  # DDP wraps the model
        decoder_input_ids = inner.prepare_decoder_input_ids_from_labels(labels=labels)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       decoder_input_ids=decoder_input_ids).logits
        # A copy model's outputs are log-probabilities: log_softmax leaves them unchanged.
        return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100,
                               label_smoothing=smoothing)

    # -- model ----------------------------------------------------------------------------------
    def model_values(self, tokenizer: Any) -> dict[str, Any]:
        """Vocabulary size and special ids; Marian also needs its start token (= pad) and position table."""
        pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
        values: dict[str, Any] = {"vocab_size": len(tokenizer), "pad_token_id": pad, "eos_token_id": eos}
        model_type = self.recipe.model["type"]
        if model_type == "marian":
            longest = max(self.recipe.data.max_length, self.recipe.data.max_target_length,
                          self.generate_settings("test")["max_new_tokens"]) + 2
            values.update(decoder_vocab_size=len(tokenizer), decoder_start_token_id=pad, bos_token_id=None,
                          forced_eos_token_id=eos, max_position_embeddings=max(longest, 256))
        else:
            values.update(bos_token_id=bos, decoder_start_token_id=bos)
        return values

    def build_model(self, tokenizer: Any) -> Any:
        """The registry's model, with the recipe's decoding written into its ``generation_config``."""
        settings = dict(self.recipe.model)
        model = build_model(settings.pop("type"), settings, **self.model_values(tokenizer))
        for key, value in self.generate_settings("test").items():
            setattr(model.generation_config, key, value)
        return model

    # -- generation + evaluation ----------------------------------------------------------------
    def generate_settings(self, split: str) -> dict[str, Any]:
        """``generate()`` kwargs for a split: the recipe's settings; validation uses ``validation_num_beams``."""
        settings = {"max_new_tokens": self.default_max_new_tokens, **self.recipe.generate}
        validation_beams = settings.pop("validation_num_beams", 1)
        if split == "validation":
            settings["num_beams"] = validation_beams
        settings.setdefault("num_beams", 1)
        if settings["num_beams"] == 1:
            settings.pop("early_stopping", None)
            settings.pop("length_penalty", None)
        return settings

    def _split_name(self, encoded: datasets.Dataset) -> str:
        entry = self._split_of.get(id(encoded))
        return entry[0] if entry is not None and entry[1] is encoded else "test"

    def generate_texts(
        self, model: Any, encoded: datasets.Dataset, accelerator: Any, batch_size: int, settings: dict[str, Any]
    ) -> list[str]:
        """Detokenized outputs for every example of an encoded split, in order (gathered across processes)."""
        inner = accelerator.unwrap_model(model) if accelerator is not None else model
        outputs: list[tuple[int, str]] = []
        for indices, batch in eval_batches(self, encoded, batch_size, accelerator, ["input_ids", "labels", "length"]):
            generated = inner.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **settings)
            texts = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
            outputs.extend(zip(indices.tolist(), (t.strip() for t in texts), strict=True))
        if accelerator is not None:
            outputs = accelerator.gather_for_metrics(outputs, use_gather_object=True)
        result = [""] * len(encoded)
        for index, text in outputs:
            result[index] = text
        return result

    def evaluate(
        self, model: Any, encoded: datasets.Dataset, raw: datasets.Dataset, accelerator: Any, batch_size: int
    ) -> dict[str, Any]:
        split = self._split_name(encoded)
        settings = self.generate_settings(split)
        predictions = self.generate_texts(model, encoded, accelerator, batch_size, settings)
        scores = self.score(predictions, list(raw["target"]), list(raw["source"]))
        scores["num_beams"] = float(settings["num_beams"])
        scores["gen_words"] = sum(len(p.split()) for p in predictions) / max(len(predictions), 1)
        return scores  # the *_signature strings are in it; run_recipe prints them once per run

    def score(self, predictions: list[str], references: list[str], sources: list[str]) -> dict[str, Any]:
        """Metrics of detokenized predictions against references (0–100)."""
        raise NotImplementedError

    def predict_texts(self, model: Any, tokenizer: Any, texts: list[str], batch_size: int = 32) -> list[dict[str, Any]]:
        """Generate for raw texts with the model's ``generation_config``: ``[{"text", "output"}]``."""
        results = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            inputs = tokenizer(chunk, truncation=True, padding=True, return_tensors="pt")
            with torch.no_grad():
                generated = model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            outputs = tokenizer.batch_decode(generated, skip_special_tokens=True)
            results.extend({"text": t, "output": o.strip()} for t, o in zip(chunk, outputs, strict=True))
        return results


class TranslationTask(Seq2SeqTask):
    """Translation: sacreBLEU and chrF on detokenized text (with signatures), BLEU by source length."""

    name = "translation"
    data_kind = "translation"
    pipeline_tag = "translation"

    def score(self, predictions: list[str], references: list[str], sources: list[str]) -> dict[str, Any]:
        result = compute_metric("sacrebleu", predictions, references)
        scores: dict[str, Any] = {k: (v if isinstance(v, str) else float(v)) for k, v in result.items()}
        scores.update(bleu_by_source_length(sources, predictions, references))
        return scores


class SummarizationTask(Seq2SeqTask):
    """Summarization: ROUGE-1/2/L/Lsum F-measures (stemmed; Lsum over sentences)."""

    name = "summarization"
    data_kind = "summarization"
    pipeline_tag = "summarization"
    default_max_new_tokens = 96

    def score(self, predictions: list[str], references: list[str], sources: list[str]) -> dict[str, Any]:
        result = compute_metric("rouge", predictions, references)
        return {k: float(v) for k, v in result.items() if not isinstance(v, str)}


__all__ = [
    "GENERATE_KEYS", "Seq2SeqTask", "TranslationTask", "SummarizationTask", "validate_generate_settings",
    "bleu_by_source_length", "lead_summary",
]
