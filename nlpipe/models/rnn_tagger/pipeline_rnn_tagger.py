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

Any other model (e.g. BERT) goes through the standard behaviour untouched, so this class can be
registered for the whole ``token-classification`` task.

This file is copied next to saved weights for ``trust_remote_code``: it imports only torch,
transformers and sibling files, and registers nothing at import time.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import TokenClassificationPipeline

from .char_encoder import encode_words_to_char_ids

RNN_TAGGER_MODEL_TYPE = "nlpipe_rnn_tagger"
CHAR_UNK_ID = 1  # RnnTaggerConfig.CHAR_UNK_ID; 0 pads


def char_ids_from_offsets(
    text: str, offsets: list[tuple[int, int]], special: list[bool], config: Any
) -> torch.Tensor:
    """Character ids (1, T, C) of each token: ``text[start:end]`` mapped with the config's char vocabulary.

    Args:
        text: the string the offsets point into.
        offsets: (start, end) per token.
        special: per token, True for special tokens (no characters: an all-padding row).
        config: an `RnnTaggerConfig` (uses ``char_vocab`` and ``max_word_chars``).
    """
    char_to_id = {char: index + 2 for index, char in enumerate(config.char_vocab or [])}
    spans = [text[start:end] for (start, end), is_special in zip(offsets, special, strict=True) if not is_special]
    encoded = iter(encode_words_to_char_ids(spans, char_to_id, config.max_word_chars, CHAR_UNK_ID))
    rows = [[] if is_special else next(encoded) for is_special in special]
    # Always max_word_chars wide: the pipeline's batching pads only the token dimension, so every chunk
    # needs the same width. The encoder drops all-padding columns, so this costs nothing.
    char_ids = torch.zeros((1, len(rows), config.max_word_chars), dtype=torch.long)  # (1, T, C)
    for position, row in enumerate(rows):
        if row:
            char_ids[0, position, : len(row)] = torch.tensor(row)
    return char_ids



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
                model_inputs["char_ids"] = char_ids_from_offsets(text, offsets, special, config)
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

    def _forward(self, model_inputs: dict[str, Any]) -> dict[str, Any]:
        """The standard forward; for CRF taggers the logits become Viterbi-consistent log-marginals."""
        attention_mask = model_inputs.get("attention_mask")
        outputs = super()._forward(model_inputs)
        if self._is_rnn_tagger() and getattr(self.model.config, "use_crf", False):
            if attention_mask is None:
                attention_mask = torch.ones(outputs["logits"].shape[:2], dtype=torch.long)
            logits = outputs["logits"]
            outputs["logits"] = self.model.decode_scores(logits, attention_mask.to(logits.device)).to(logits.dtype)
        return outputs


__all__ = ["RnnTaggerTokenClassificationPipeline", "char_ids_from_offsets"]
