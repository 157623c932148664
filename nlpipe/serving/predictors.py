"""The model behind `nlpipe serve`: a small predictor interface (texts → one result per text).

The HTTP layer only knows `Predictor`: a task name, a preferred batch size and ``predict(texts)``.
`TorchPredictor` runs a run folder's model with nlpipe's own prediction code (the ``ner`` pipeline
for taggers, the task's ``predict_texts`` for generation, i.e. what ``nlpipe predict`` prints); an
ONNX predictor (``--onnx``, `nlpipe.export.OnnxPredictor`) answers behind the same interface.

Results per task (the keys every predictor must return, in input order):

| recipe task | endpoint | result per text |
|---|---|---|
| token-classification | ``POST /entities`` | ``{"text", "entities": [{"entity_group", "score", "word", "start", "end"}]}`` |
| translation | ``POST /translation`` | ``{"text", "translation"}`` |
| summarization | ``POST /summary`` | ``{"text", "summary"}`` |
| causal-lm | ``POST /continuation`` | ``{"text", "continuation", "generated_text"}`` (prompt + continuation) |
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import NlpipeError

# recipe task → the endpoint (and router) that serves it
TASK_ENDPOINTS = {
    "token-classification": "entities",
    "translation": "translation",
    "summarization": "summary",
    "causal-lm": "continuation",
}


@runtime_checkable
class Predictor(Protocol):
    """What the server needs from a model.

    Attributes:
        task: the recipe task (a key of `TASK_ENDPOINTS`).
        batch_size: how many texts one ``predict`` call handles well (the server groups up to this many).
    """

    task: str
    batch_size: int

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        """One result per text, in order, with the task's keys (see the module docstring).

        Called from one worker thread at a time, never concurrently.
        """
        ...


class TorchPredictor:
    """A run folder's PyTorch model, through the same code as ``pipeline()`` / ``nlpipe predict``.

    Args:
        run_dir: a finished run folder.
        batch_size: texts per forward pass.

    Raises:
        NlpipeError: the folder is not a finished run folder.
    """

    def __init__(self, run_dir: str | Path, batch_size: int = 32) -> None:
        from ..run import load_run

        self.run_dir = Path(run_dir)
        self.recipe, self.run_info, self.model, self.tokenizer = load_run(self.run_dir)
        self.task = self.recipe.task
        if self.task not in TASK_ENDPOINTS:
            raise NlpipeError(f"{self.run_dir}: serving task '{self.task}' is not supported; "
                              f"serve a run of {', '.join(TASK_ENDPOINTS)}")
        self.batch_size = batch_size
        self._ner = None
        self._task = None
        if self.task == "token-classification":
            from transformers import pipeline

            # nlpipe registers its tagger pipeline (char features, CRF) for this task at import. A text longer
            # than the model's window is tagged in overlapping windows (stride) instead of being cut off, so no
            # entity past the first window is lost; shorter texts are tagged exactly as by pipeline("ner").
            window = getattr(self.tokenizer, "model_max_length", None)
            chunking = {"stride": max(1, min(64, window // 4))} if isinstance(window, int) and 8 <= window < 10**6 else {}
            self._ner = pipeline("ner", model=self.model, tokenizer=self.tokenizer, aggregation_strategy="simple",
                                 **chunking)
        else:
            from ..tasks import get_task

            self._task = get_task(self.recipe)

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        """One result per text (see the module docstring for the keys)."""
        # No inference_mode here: CRF marginals take a gradient (under enable_grad); the pipeline and
        # predict_texts turn gradients off themselves.
        if self._ner is not None:
            outputs = self._ner(list(texts), batch_size=min(self.batch_size, len(texts)))
            return [{"text": text, "entities": [_plain_entity(e) for e in entities]}
                    for text, entities in zip(texts, outputs, strict=True)]
        if self.task == "causal-lm":
            results = self._task.predict_texts(self.model, self.tokenizer, list(texts))
            return [{"text": r["text"], "continuation": r["generated_text"][len(r["text"]):],
                     "generated_text": r["generated_text"]} for r in results]
        results = self._task.predict_texts(self.model, self.tokenizer, list(texts), batch_size=self.batch_size)
        key = TASK_ENDPOINTS[self.task]
        return [{"text": r["text"], key: r["output"]} for r in results]


def _plain_entity(entity: dict[str, Any]) -> dict[str, Any]:
    """An entity with JSON-ready values (the pipeline gives numpy floats and ints)."""
    return {"entity_group": str(entity["entity_group"]), "score": float(entity["score"]), "word": str(entity["word"]),
            "start": int(entity["start"]), "end": int(entity["end"])}


def load_predictor(run_dir: str | Path, *, onnx: bool = False, batch_size: int = 32) -> Predictor:
    """The predictor for a run folder: PyTorch, or ONNX Runtime with ``onnx=True``.

    Raises:
        NlpipeError: the folder cannot be served (with ``onnx=True``: see `nlpipe.export.onnx_predictor`).
    """
    if not onnx:
        return TorchPredictor(run_dir, batch_size=batch_size)
    # ONNX serving lives beside the exporter: an export folder, or RUN_DIR's RUN_DIR-onnx (docs/serving.md).
    from ..export import onnx_predictor

    return onnx_predictor(run_dir, batch_size=batch_size)


__all__ = ["Predictor", "TorchPredictor", "TASK_ENDPOINTS", "load_predictor"]
