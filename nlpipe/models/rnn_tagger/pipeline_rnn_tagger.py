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
        if not sortable:
            return super().__call__(inputs, *args, **kwargs)
        order = sorted(range(len(inputs)), key=lambda index: len(inputs[index]))
        outputs = super().__call__([inputs[index] for index in order], *args, **kwargs)
        results: list[Any] = [None] * len(inputs)
        for position, index in enumerate(order):
            results[index] = outputs[position]
        return results

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
