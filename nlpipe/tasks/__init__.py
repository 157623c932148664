"""Task hooks by recipe task name; imported lazily so a task's dependencies load only when used."""

from __future__ import annotations

import importlib

from ..errors import NlpipeError
from ..recipe import Recipe
from .base import Task

TASK_CLASSES = {
    "token-classification": "nlpipe.tasks.token_classification:TokenClassificationTask",
    "translation": "nlpipe.tasks.seq2seq:TranslationTask",
    "summarization": "nlpipe.tasks.seq2seq:SummarizationTask",
    "causal-lm": "nlpipe.tasks.causal_lm:CausalLmTask",
    "masked-lm": "nlpipe.tasks.masked_lm:MaskedLmTask",
}


def get_task(recipe: Recipe) -> Task:
    """The `Task` object for a recipe."""
    path = TASK_CLASSES.get(recipe.task)
    if path is None:
        raise NlpipeError(f"{recipe.source}: key 'task': unknown task '{recipe.task}'")
    module, name = path.split(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise NlpipeError(f"{recipe.source}: task '{recipe.task}' is not available in this version ({exc})") from exc
    return cls(recipe)


__all__ = ["Task", "get_task", "TASK_CLASSES"]
