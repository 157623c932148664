"""Text-to-text pipelines for encoder–decoder models (the ones transformers 5 removed).

Each call tokenizes the input text(s) (truncated to the tokenizer's ``model_max_length``, which
nlpipe sets to the recipe's ``data.max_length``), runs ``model.generate`` with the model's
``generation_config`` (nlpipe writes the recipe's ``generate:`` settings there) updated by any
generation keyword given to the pipeline or the call, and decodes the output without special
tokens. Output per input: ``[{"generated_text": ...}]``, ``[{"translation_text": ...}]`` or
``[{"summary_text": ...}]`` as in transformers 4.

Example::

    import nlpipe  # registers the pipelines
    from transformers import pipeline
    translate = pipeline("translation", model="runs/translation-gru-attn")
    translate("Ein Hund läuft über eine Wiese.")  # [{"translation_text": "A dog runs across a meadow."}]
"""

from __future__ import annotations

from typing import Any

from transformers import Pipeline


class Text2TextGenerationPipeline(Pipeline):
    """Generate text from text with an ``AutoModelForSeq2SeqLM``; returns ``[{"generated_text": str}]`` per input."""

    return_name = "generated"
    _pipeline_calls_generate = True
    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False

    def _sanitize_parameters(
        self,
        truncation: bool | None = None,
        clean_up_tokenization_spaces: bool | None = None,
        **generate_kwargs: Any,
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        preprocess = {} if truncation is None else {"truncation": truncation}
        postprocess = {} if clean_up_tokenization_spaces is None else {
            "clean_up_tokenization_spaces": clean_up_tokenization_spaces}
        return preprocess, generate_kwargs, postprocess

    def __call__(self, inputs: str | list[str], **kwargs: Any) -> list[dict[str, str]] | list[list[dict[str, str]]]:
        """Generate for one text (→ a list with one dict) or a list of texts (→ one dict per text, as transformers 4
        returned it; one list per text when a text has several outputs, e.g. ``num_return_sequences=2``)."""
        result = super().__call__(inputs, **kwargs)
        if isinstance(inputs, list) and all(isinstance(text, str) for text in inputs) and all(
            len(outputs) == 1 for outputs in result
        ):
            return [outputs[0] for outputs in result]
        return result

    def preprocess(self, inputs: str, truncation: bool = True) -> dict[str, Any]:
        if not isinstance(inputs, str):
            raise ValueError(f"{type(self).__name__} takes a string or a list of strings, got {type(inputs).__name__}")
        return self.tokenizer(inputs, truncation=truncation, return_tensors="pt")

    def _forward(self, model_inputs: dict[str, Any], **generate_kwargs: Any) -> dict[str, Any]:
        kwargs = self._prepare_generate_kwargs(generate_kwargs)
        output_ids = self.model.generate(
            input_ids=model_inputs["input_ids"], attention_mask=model_inputs["attention_mask"], **kwargs
        )
        return {"output_ids": output_ids}

    def postprocess(self, model_outputs: dict[str, Any], clean_up_tokenization_spaces: bool = False) -> list[dict[str, str]]:
        texts = self.tokenizer.batch_decode(
            model_outputs["output_ids"], skip_special_tokens=True,
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
        )
        return [{f"{self.return_name}_text": text.strip()} for text in texts]


class TranslationPipeline(Text2TextGenerationPipeline):
    """Translate with a model trained on one language pair; returns ``[{"translation_text": str}]`` per input."""

    return_name = "translation"


class SummarizationPipeline(Text2TextGenerationPipeline):
    """Summarize; returns ``[{"summary_text": str}]`` per input."""

    return_name = "summary"


PIPELINE_TASKS: dict[str, type[Text2TextGenerationPipeline]] = {
    "text2text-generation": Text2TextGenerationPipeline,
    "translation": TranslationPipeline,
    "summarization": SummarizationPipeline,
}


def register_pipelines() -> None:
    """Register the three task names with transformers' pipeline registry (idempotent)."""
    import transformers.pipelines
    from transformers import AutoModelForSeq2SeqLM
    from transformers.pipelines import PIPELINE_REGISTRY

    # transformers 5 lists these names in `REMOVED_TASKS` and `pipeline()` raises KeyError for them before
    # it consults the registry, so a registered class alone is never reached: take our names off that list.
    removed = getattr(transformers.pipelines, "REMOVED_TASKS", {})
    for task, cls in PIPELINE_TASKS.items():
        removed.pop(task, None)
        PIPELINE_REGISTRY.register_pipeline(task, pipeline_class=cls, pt_model=AutoModelForSeq2SeqLM, type="text")
