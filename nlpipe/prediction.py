"""`nlpipe predict`: use a finished run folder on raw text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import NlpipeError
from .run import load_run

MAX_PREDICT_CHARS = 100_000


def check_texts(texts: list[str], source: str = "input") -> None:
    """Reject what cannot be predicted, naming where it came from."""
    if not texts:
        raise NlpipeError(f"{source}: nothing to predict; give a sentence or --file with one sentence per line")
    for i, text in enumerate(texts, start=1):
        if not text.strip():
            raise NlpipeError(f"{source}, line {i}: empty text; give a non-empty sentence")
        if len(text) > MAX_PREDICT_CHARS:
            raise NlpipeError(
                f"{source}, line {i}: {len(text):,} characters is too long (limit {MAX_PREDICT_CHARS:,}); split it"
            )


def predict(run_dir: str | Path, texts: list[str], source: str = "input") -> list[dict[str, Any]]:
    """Predict for each text with a run folder's model.

    Returns:
        Per text: for token classification ``{"text", "entities", "words"}``; entities as the
        ``ner`` pipeline gives them (entity_group, score, word, start, end).

    Raises:
        NlpipeError: empty input, missing run files.
    """
    check_texts(texts, source)
    recipe, _, model, tokenizer = load_run(run_dir, "predict")
    results = []
    if recipe.task == "token-classification":
        from .tasks.token_classification import group_entities, tag_words

        for text in texts:
            words = tag_words(model, tokenizer, text)
            results.append({"text": text, "entities": group_entities(text, words), "words": words})
        return results
    from .tasks import get_task

    task = get_task(recipe)
    if not hasattr(task, "predict_texts"):
        raise NlpipeError(f"{run_dir}: predict is not available for task '{recipe.task}' yet")
    return task.predict_texts(model, tokenizer, texts)
