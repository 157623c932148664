"""The ``ner`` / ``token-classification`` pipeline for nlpipe's recurrent taggers.

The standard `TokenClassificationPipeline` feeds the model only what the tokenizer returns, and reads
labels off ``logits`` with an argmax. Our taggers may need two more things:

- **character features** (``config.char_encoder != "none"``): `preprocess` adds ``char_ids`` (1, T, C),
  computed exactly as in training — each token's surface text (cut out of the input with the
  tokenizer's offsets) mapped with ``config.char_vocab`` and truncated with `encode_words_to_char_ids`;
- **a CRF** (``config.use_crf``): `_forward` replaces the logits by the model's `decode_scores`, log
  CRF marginals arranged so that the argmax is the Viterbi path. The pipeline's own postprocessing
  (word aggregation, entity grouping, offsets) then works unchanged and reports the Viterbi labels
  with their marginal probabilities.

Entity ``word``s are cut out of the input with the offsets, so a lower-cased or digit-normalised word
vocabulary still reports "Paris" and "1996" as written, and "Al-Ain" keeps its hyphen.

Speed: with ``aggregation_strategy="simple"`` (one text or a list), our taggers take a batched path that gives
the same entities without the standard per-text machinery: texts sorted by length, one tokenizer call, one
model + CRF pass per batch under ``inference_mode``, the standard "simple" grouping (docs/performance.md). Other
calls take the standard path. ``bf16=True`` runs the model under bfloat16 autocast (AMX CPUs, GPUs; opt-in).

Any other model (e.g. BERT) goes through the standard behaviour untouched, so this class can be
registered for the whole ``token-classification`` task.

This file is copied next to saved weights for ``trust_remote_code``: it imports only numpy, torch,
transformers and sibling files, and registers nothing at import time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import TokenClassificationPipeline

from .char_encoder import encode_words_to_char_ids

RNN_TAGGER_MODEL_TYPE = "nlpipe_rnn_tagger"
CHAR_UNK_ID = 1  # RnnTaggerConfig.CHAR_UNK_ID; 0 pads


def char_ids_from_offsets(
    text: str,
    offsets: list[tuple[int, int]],
    special: list[bool],
    config: Any,
    char_to_id: dict[str, int] | None = None,
) -> torch.Tensor:
    """Character ids (1, T, C) of each token: ``text[start:end]`` mapped with the config's char vocabulary.

    Args:
        text: the string the offsets point into.
        offsets: (start, end) per token.
        special: per token, True for special tokens (no characters: an all-padding row).
        config: an `RnnTaggerConfig` (uses ``char_vocab`` and ``max_word_chars``).
        char_to_id: the config's character → id map, when the caller has it already (built otherwise).
    """
    if char_to_id is None:
        char_to_id = char_vocabulary(config)
    width = config.max_word_chars
    spans = [text[start:end] for (start, end), is_special in zip(offsets, special, strict=True) if not is_special]
    encoded = iter(encode_words_to_char_ids(spans, char_to_id, width, CHAR_UNK_ID))
    # Always max_word_chars wide: the pipeline's batching pads only the token dimension, so every chunk
    # needs the same width. The encoder drops all-padding columns, so this costs nothing. One tensor is
    # built from padded Python rows (not one small tensor per token: that was most of this function's time).
    empty = [0] * width
    rows = [empty if is_special else (row := next(encoded)) + [0] * (width - len(row)) for is_special in special]
    return torch.tensor([rows], dtype=torch.long).reshape(1, len(rows), width)  # (1, T, C)


def char_vocabulary(config: Any) -> dict[str, int]:
    """The config's character → id map (0 pads, 1 is unknown, the vocabulary starts at 2)."""
    return {char: index + 2 for index, char in enumerate(config.char_vocab or [])}



def tokenize_with_chars(tokenizer: Any, text: str | list[str], config: Any, **kwargs: Any) -> Any:
    """`tokenizer(text, return_tensors="pt")` plus the ``char_ids`` a char-feature tagger needs.

    The tokenizer alone cannot supply them (a word-level vocabulary may be lower-cased and digit-normalised,
    so the characters must come from the text), hence ``model(**tokenizer(text))`` fails on such a model::

        >>> inputs = tokenize_with_chars(tokenizer, "EU rejects German call .", model.config)
        >>> logits = model(**inputs).logits

    Args:
        tokenizer: the run's fast tokenizer.
        text: one text or a list of texts (padded to the longest).
        config: the model's `RnnTaggerConfig` (``char_vocab``, ``max_word_chars``).
        kwargs: more arguments for the tokenizer call (e.g. ``truncation=True``).

    Returns:
        A `BatchEncoding` of tensors: ``input_ids``, ``attention_mask`` and, for a char-feature model,
        ``char_ids`` (B, T, C). Offsets and special-token masks used on the way are not in it.
    """
    texts = [text] if isinstance(text, str) else list(text)
    encoded = tokenizer(texts, return_tensors="pt", padding=True, return_offsets_mapping=True,
                        return_special_tokens_mask=True, **kwargs)
    offsets, special = encoded.pop("offset_mapping"), encoded.pop("special_tokens_mask")
    if getattr(config, "char_encoder", "none") != "none":
        encoded["char_ids"] = torch.cat([
            char_ids_from_offsets(item, [tuple(pair) for pair in offsets[row].tolist()],
                                  [bool(flag) for flag in special[row].tolist()], config)
            for row, item in enumerate(texts)
        ])
    return encoded

class RnnTaggerTokenClassificationPipeline(TokenClassificationPipeline):
    """`TokenClassificationPipeline` that also serves taggers with char features and a CRF.

    Example:

    ```python
    >>> from transformers import pipeline
    >>> ner = pipeline("ner", model="runs/ner-bilstm-crf", aggregation_strategy="simple",
    ...                pipeline_class=RnnTaggerTokenClassificationPipeline)  # implicit after `import nlpipe`
    >>> ner("EU rejects German call to boycott British lamb.")
    ```
    """

    def _is_rnn_tagger(self) -> bool:
        return getattr(self.model.config, "model_type", None) == RNN_TAGGER_MODEL_TYPE

    def _sanitize_parameters(self, bf16: bool | None = None, **kwargs: Any):
        """The standard parameters, plus ``bf16=True``: run the tagger under bfloat16 autocast (opt-in).

        On a CPU with AMX (or a GPU) bf16 matrix products make the recurrent encoder ≈2-3× faster at batch
        32; the CRF and the scores stay float32. Entities can differ from float32 where two labels are
        nearly tied, so float32 stays the default.
        """
        preprocess_params, forward_params, postprocess_params = super()._sanitize_parameters(**kwargs)
        if bf16 is not None:
            forward_params["bf16"] = bool(bf16)
        return preprocess_params, forward_params, postprocess_params

    def get_inference_context(self):
        """``torch.inference_mode`` for our taggers (their CRF decoding needs no autograd), else the standard."""
        return torch.inference_mode if self._is_rnn_tagger() else super().get_inference_context()

    def __call__(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        """Tag one text or a list of texts; a list is batched in order of length, answers in input order.

        The standard pipeline batches texts in the order given, so every batch is padded to its longest
        text. Our taggers' outputs for a text do not depend on its batch neighbours (packed-equivalent
        RNN passes, per-word char encoding, per-row CRF), so sorting by length first changes no entity and
        removes most of the padding: ≈2× less recurrent work on CoNLL-2003 at batch 32.
        """
        batch_size = kwargs.get("batch_size", getattr(self, "_batch_size", None)) or 1
        sortable = (
            self._is_rnn_tagger()
            and batch_size > 1
            and isinstance(inputs, list)
            and len(inputs) > batch_size
            and all(isinstance(text, str) for text in inputs)
            and not kwargs.get("is_split_into_words")
            and kwargs.get("offset_mapping") is None
        )
        if self._is_rnn_tagger() and isinstance(inputs, (list, str)) and not args:
            fast = self._tag_texts_in_batches([inputs] if isinstance(inputs, str) else inputs, kwargs)
            if fast is not None:
                return fast[0] if isinstance(inputs, str) else fast
        if not sortable:
            return super().__call__(inputs, *args, **kwargs)
        order = sorted(range(len(inputs)), key=lambda index: len(inputs[index]))
        outputs = super().__call__([inputs[index] for index in order], *args, **kwargs)
        results: list[Any] = [None] * len(inputs)
        for position, index in enumerate(order):
            results[index] = outputs[position]
        return results

    def _tag_texts_in_batches(self, texts: list[Any], kwargs: dict[str, Any]) -> list[list[dict]] | None:
        """The fast path for texts with ``aggregation_strategy="simple"`` (one or a list); None where it does not apply.

        Same entities as the standard path (tested), without its per-text machinery: the fast tokenizer encodes
        a whole batch (texts sorted by length, so little padding) in one call, the char ids of a batch are one
        tensor, the model and the CRF run once per batch under ``inference_mode``, and the entities are grouped
        from one argmax per token exactly as `TokenClassificationPipeline` groups them ("simple").
        """
        if not texts or not all(isinstance(text, str) for text in texts) or not self.tokenizer.is_fast:
            return None
        known = {"batch_size", "aggregation_strategy", "ignore_labels", "bf16", "num_workers"}
        if set(kwargs) - known or self.tokenizer.pad_token_id is None or self.tokenizer.padding_side != "right":
            return None
        params = {key: value for key, value in kwargs.items() if key not in ("batch_size", "num_workers")}
        preprocess_params, forward_params, postprocess_params = self._sanitize_parameters(**params)
        preprocess_params = {**self._preprocess_params, **preprocess_params}
        forward_params = {**self._forward_params, **forward_params}
        postprocess_params = {**self._postprocess_params, **postprocess_params}
        strategy = postprocess_params.get("aggregation_strategy")
        # With `stride` a text longer than the model's window is tagged in overlapping windows (the standard
        # path does that); a text that fits in one window is tagged exactly as without stride, here.
        tokenizer_params = preprocess_params.get("tokenizer_params") or {}
        windowed = bool(tokenizer_params)
        if (
            set(tokenizer_params) - {"return_overflowing_tokens", "padding", "stride"}
            or preprocess_params.get("is_split_into_words")
            or getattr(strategy, "value", strategy) != "simple"
        ):
            return None
        batch_size = max(1, int(kwargs.get("batch_size") or getattr(self, "_batch_size", None) or 1))
        ignore_labels = postprocess_params.get("ignore_labels") or ["O"]
        config = self.model.config
        truncation = bool(self.tokenizer.model_max_length and self.tokenizer.model_max_length > 0)
        needs_chars = getattr(config, "char_encoder", "none") != "none"
        char_to_id = getattr(self, "_char_to_id", None)
        if needs_chars and char_to_id is None:
            char_to_id = self._char_to_id = char_vocabulary(config)
        order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
        results: list[list[dict] | None] = [None] * len(texts)
        with self.device_placement(), torch.inference_mode():
            for first in range(0, len(texts), batch_size):
                indices = order[first : first + batch_size]
                batch = [texts[index] for index in indices]
                encoding = self.tokenizer(
                    batch, return_tensors="pt", truncation=truncation and not windowed, padding=True,
                    return_special_tokens_mask=True, return_offsets_mapping=True,
                )
                if windowed and encoding["input_ids"].shape[1] > self.tokenizer.model_max_length:
                    return None  # some text needs several windows: the standard path tags them all
                lengths = encoding["attention_mask"].sum(dim=1).tolist()
                offsets = encoding["offset_mapping"].tolist()
                special = encoding["special_tokens_mask"].tolist()
                model_inputs = {"input_ids": encoding["input_ids"], "attention_mask": encoding["attention_mask"]}
                if needs_chars:
                    width, steps = config.max_word_chars, encoding["input_ids"].shape[1]
                    char_ids = torch.zeros((len(batch), steps, width), dtype=torch.long)  # (B, T, C)
                    for row, (text, length) in enumerate(zip(batch, lengths, strict=True)):
                        char_ids[row, :length] = char_ids_from_offsets(
                            text, offsets[row][:length], [bool(f) for f in special[row][:length]], config, char_to_id
                        )[0]
                    model_inputs["char_ids"] = char_ids
                real = [row for row, length in enumerate(lengths) if length > 0]  # no token: no entity
                if len(real) < len(batch):
                    model_inputs = {key: value[real] for key, value in model_inputs.items()}
                scores = self._label_scores(model_inputs, bool(forward_params.get("bf16", False))) if real else None
                for row, (index, text, length) in enumerate(zip(indices, batch, lengths, strict=True)):
                    if length == 0:
                        results[index] = []
                        continue
                    row = real.index(row) if len(real) < len(batch) else row
                    results[index] = self._group_simple(
                        text, scores[row, :length], offsets[row][:length], special[row][:length], ignore_labels
                    )
        return results

    def _label_scores(self, model_inputs: dict[str, torch.Tensor], bf16: bool) -> Any:
        """(B, T, L) float32 numpy scores of a batch: the logits, or the CRF's Viterbi-consistent log-marginals."""
        model_inputs = self._ensure_tensor_on_device(model_inputs, device=self.device)
        with torch.autocast(self.model.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = self.model(**model_inputs).logits.float()
        if getattr(self.model.config, "use_crf", False):
            logits = self.model.decode_scores(logits, model_inputs["attention_mask"])
        return logits.cpu().numpy()

    def _group_simple(
        self, text: str, logits: Any, offsets: list, special: list, ignore_labels: list[str]
    ) -> list[dict]:
        """`TokenClassificationPipeline.postprocess` with "simple" aggregation for one text, words cut from it."""
        maxes = np.max(logits, axis=-1, keepdims=True)
        shifted_exp = np.exp(logits - maxes)
        scores = shifted_exp / shifted_exp.sum(axis=-1, keepdims=True)  # (T, L), as the standard postprocess
        best = scores.argmax(axis=-1)
        id2label = self.model.config.id2label
        tokens = [
            (id2label[int(best[position])], scores[position, best[position]], start, end)
            for position, ((start, end), is_special) in enumerate(zip(offsets, special, strict=True))
            if not is_special
        ]
        groups, current = [], []
        for token in tokens:
            if current:
                bi, tag = self.get_tag(token[0])
                if not (tag == self.get_tag(current[-1][0])[1] and bi != "B"):
                    groups.append(current)
                    current = []
            current.append(token)
        if current:
            groups.append(current)
        entities = []
        for group in groups:
            name = group[0][0].split("-", 1)[-1]
            if name in ignore_labels:
                continue
            start, end = group[0][2], group[-1][3]
            score = np.mean(np.nanmean([token[1] for token in group]))
            entities.append({"entity_group": name, "score": score, "word": text[start:end], "start": start, "end": end})
        return entities

    def preprocess(self, sentence: Any, offset_mapping: Any = None, **preprocess_params: Any):
        """The standard chunks, plus ``char_ids`` for models with a character encoder."""
        config = self.model.config
        needs_chars = self._is_rnn_tagger() and getattr(config, "char_encoder", "none") != "none"
        text = None
        for model_inputs in super().preprocess(sentence, offset_mapping=offset_mapping, **preprocess_params):
            if needs_chars:
                if model_inputs.get("sentence") is not None:
                    text = model_inputs["sentence"]  # only the first chunk carries it
                offsets = model_inputs.get("offset_mapping")
                if offsets is None:
                    raise ValueError("character features need token offsets: use the model's fast tokenizer")
                offsets = [tuple(pair) for pair in offsets[0].tolist()]
                special = [bool(flag) for flag in model_inputs["special_tokens_mask"][0].tolist()]
                word_ids = model_inputs.get("word_ids")
                if word_ids is not None:
                    # is_split_into_words: offsets are relative to each word; make them relative to `text`.
                    word_starts = model_inputs["word_to_chars_map"]
                    offsets = [
                        (start, end) if word is None else (start + word_starts[word][0], end + word_starts[word][0])
                        for word, (start, end) in zip(word_ids, offsets, strict=True)
                    ]
                char_to_id = getattr(self, "_char_to_id", None)
                if char_to_id is None:
                    char_to_id = self._char_to_id = char_vocabulary(config)
                model_inputs["char_ids"] = char_ids_from_offsets(text, offsets, special, config, char_to_id)
            yield model_inputs

    def postprocess(self, all_outputs: list[dict[str, Any]], *args: Any, **kwargs: Any) -> list[dict]:
        """The standard entities, each ``word`` cut out of the input with its offsets.

        The standard pipeline names a token by its vocabulary entry ("paris", "0000" for a lower-cased,
        digit-normalised vocabulary) and joins a group's tokens with spaces ("Al - Ain"); the text span is
        what the user wrote. Every entity, grouped or per token, carries its ``start``/``end``.
        """
        entities = super().postprocess(all_outputs, *args, **kwargs)
        sentence = all_outputs[0].get("sentence")
        if self._is_rnn_tagger() and isinstance(sentence, str):
            for entity in entities:
                if entity.get("start") is not None and entity.get("end") is not None:
                    entity["word"] = sentence[entity["start"] : entity["end"]]
        return entities

    def _forward(self, model_inputs: dict[str, Any], bf16: bool = False) -> dict[str, Any]:
        """The standard forward; for CRF taggers the logits become Viterbi-consistent log-marginals."""
        attention_mask = model_inputs.get("attention_mask")
        device_type = self.model.device.type
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16 and self._is_rnn_tagger()):
            outputs = super()._forward(model_inputs)
        if bf16:
            outputs["logits"] = outputs["logits"].float()  # the CRF and the scores are float32
        if self._is_rnn_tagger() and getattr(self.model.config, "use_crf", False):
            if attention_mask is None:
                attention_mask = torch.ones(outputs["logits"].shape[:2], dtype=torch.long)
            logits = outputs["logits"]
            outputs["logits"] = self.model.decode_scores(logits, attention_mask.to(logits.device)).to(logits.dtype)
        return outputs


__all__ = ["RnnTaggerTokenClassificationPipeline", "char_ids_from_offsets", "char_vocabulary"]
