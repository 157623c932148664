"""`nlpipe serve`: a run folder's model behind an HTTP JSON API and a small web page.

- `predictors`: the model behind a small interface (texts → results): PyTorch, or ONNX (`--onnx`, from nlpipe.export).
- `batching`: one asyncio queue and worker that group concurrent requests into model calls.
- `routers`: one FastAPI router per task (``/entities``, ``/translation``, ``/summary``, ``/continuation``).
- `app`: the app factory (`create_app`): limits, JSON errors, ``/health``, metadata at ``/``, the page.
- `server`: `serve` binds the socket and runs uvicorn; the CLI only calls it.
- ``static/``: the page (HTML, JS, CSS; no network access needed).

Example::

    from nlpipe.serving import ServeLimits, serve
    serve("runs/ner-bilstm-crf", port=8000, limits=ServeLimits(max_texts=16))
"""

from .app import ServeLimits, create_app, run_metadata
from .predictors import TASK_ENDPOINTS, Predictor, TorchPredictor, load_predictor
from .server import serve

__all__ = ["ServeLimits", "create_app", "run_metadata", "Predictor", "TorchPredictor", "load_predictor",
           "TASK_ENDPOINTS", "serve"]
