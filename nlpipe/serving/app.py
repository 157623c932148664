"""The ASGI app of `nlpipe serve`: the task's router, the batching queue, limits, errors, the page.

Routes:

| route | what |
|---|---|
| ``POST /<endpoint>`` | the task's endpoint (``/entities``, ``/translation``, ``/summary`` or ``/continuation``) |
| ``GET /health`` | ``{"status": "ok", ...}`` once the model is loaded |
| ``GET /`` | the model card's metadata as JSON; the web page when the client asks for HTML (browsers) |
| ``GET /ui`` | the web page, always |
| ``GET /openapi.json`` | the API schema |

Every refusal is JSON ``{"error": "..."}`` with a 4xx status: 400 unreadable JSON or empty body, 413 body too
large, 422 wrong fields or types, or texts over the limits, 404/405 unknown route or method, 503 queue full.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import NlpipeError
from .batching import BatchingQueue, QueueFullError
from .predictors import TASK_ENDPOINTS, Predictor
from .routers import ServingError, router_for_task, validation_message

STATIC_DIR = Path(__file__).parent / "static"


@dataclass
class ServeLimits:
    """What one request may ask, and how requests are grouped.

    Args:
        max_texts: texts per request.
        max_chars: characters per text.
        max_body_bytes: bytes per request body.
        max_batch_size: texts per model call when grouping concurrent requests.
        max_wait_ms: how long a request waits for others to share its model call.
        max_queued: requests waiting for the model before new ones get 503.
    """

    max_texts: int = 64
    max_chars: int = 5_000
    max_body_bytes: int = 1 << 20
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_queued: int = 1024

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value < 0 or (value == 0 and name != "max_wait_ms"):
                option = "--" + name.replace("_", "-")
                raise NlpipeError(f"{option} {value}: must be {'0 or more' if name == 'max_wait_ms' else 'at least 1'}")


def error_response(status: int, message: str) -> JSONResponse:
    """The one error shape: ``{"error": message}``."""
    return JSONResponse({"error": message}, status_code=status)


class BodySizeLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with 413 before the app reads them.

    The body is read here (it is small by definition) and replayed to the app, so a body sent without
    a Content-Length (chunked) is limited too.
    """

    DRAIN_LIMIT = 64 << 20  # read (and drop) at most this much of a refused body, so the client sees the answer

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(scope, receive, send, 0)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send, size, more=message.get("more_body", False))
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # only a disconnect can come now

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, read: int, more: bool = True) -> None:
        while more and read < self.DRAIN_LIMIT:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            read += len(message.get("body", b""))
            more = message.get("more_body", False)
        response = error_response(413, f"request body is larger than {self.max_bytes:,} bytes; "
                                       "send fewer or shorter texts per request")
        await response(scope, receive, send)


def run_metadata(run_dir: str | Path) -> dict[str, Any]:
    """What ``GET /`` shows: the run's task, model, headline metrics and data source, from its model card files.

    Reads ``recipe.yaml``, ``metrics.json``, ``run_info.json`` and the YAML header of ``README.md`` (the Hub's
    card metadata) when present; nothing else (no environment, no local paths).
    """
    from ..model_card import HEADLINE, PIPELINE_TAGS
    from ..recipe import parse_recipe, read_yaml

    run_dir = Path(run_dir)
    recipe = parse_recipe(read_yaml(run_dir / "recipe.yaml"), str(run_dir / "recipe.yaml"))
    metrics = _read_json(run_dir / "metrics.json")
    info = _read_json(run_dir / "run_info.json")
    headline = {
        split: {name: metrics[split][name] for name in HEADLINE.get(recipe.task, []) if name in metrics.get(split, {})}
        for split in ("validation", "test")
        if isinstance(metrics.get(split), dict)
    }
    return {
        "name": recipe.name,
        "task": recipe.task,
        "pipeline_tag": PIPELINE_TAGS.get(recipe.task),
        "description": recipe.description,
        "model": {"type": recipe.model.get("type"), "parameters": metrics.get("parameters")},
        "metrics": headline,
        "selection_metric": metrics.get("selection_metric"),
        # where the data came from (sample, local files, the Hub), not the server's paths
        "data": {"dataset": recipe.data.dataset, "source": (info.get("data") or {}).get("source")},
        "card": _card_header(run_dir / "README.md"),
    }


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _card_header(path: Path) -> dict[str, Any]:
    """The YAML metadata between the leading ``---`` lines of a model card (empty when absent or unreadable)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}
    if not text.startswith("---"):
        return {}
    header = text[3:].split("\n---", 1)[0]
    try:
        value = yaml.safe_load(header)
    except yaml.YAMLError:
        return {}
    return value if isinstance(value, dict) else {}


def _validation_message(exc: RequestValidationError) -> tuple[int, str]:
    """A 400/422 status and one line naming the field and what to send (for FastAPI's own checks)."""
    errors = list(exc.errors())
    if errors and errors[0].get("type") == "json_invalid":
        return 400, 'body: not valid JSON; send {"texts": ["a sentence", ...]}'
    return 422, validation_message(errors)


def create_app(predictor: Predictor, metadata: dict[str, Any] | None = None,
               limits: ServeLimits | None = None) -> FastAPI:
    """The app serving one predictor: its task's router, ``/health``, ``/`` and the page.

    Args:
        predictor: the model (`load_predictor`).
        metadata: shown at ``GET /`` (`run_metadata`); the endpoint, backend and limits are added.
        limits: request limits and batching settings.
    """
    limits = limits or ServeLimits()
    queue = BatchingQueue(predictor, max_batch_size=limits.max_batch_size, max_wait_s=limits.max_wait_ms / 1000,
                          max_queued=limits.max_queued)
    endpoint = "/" + TASK_ENDPOINTS[predictor.task]
    info = {**(metadata or {"task": predictor.task}), "endpoint": endpoint,
            "backend": getattr(predictor, "backend", "pytorch"), "limits": asdict(limits)}

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # FastAPI's lifespan protocol
        queue.start()
        yield
        await queue.stop()

    # No /docs or /redoc: their pages load scripts from a CDN; /openapi.json stays.
    app = FastAPI(title=f"nlpipe: {info.get('name', predictor.task)}", lifespan=lifespan, docs_url=None,
                  redoc_url=None)
    app.state.limits = limits
    app.state.queue = queue
    app.include_router(router_for_task(predictor.task))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_body_bytes)

    @app.get("/health", tags=["server"])
    async def health() -> dict[str, Any]:
        """The server is up and its model loaded."""
        return {"status": "ok", "task": predictor.task, "backend": info["backend"], "endpoint": endpoint,
                "queued": queue.queued,
                "requests": queue.requests, "batches": queue.batches}

    @app.get("/", tags=["server"], response_model=None)
    async def root(request: Request) -> Any:
        """The model's metadata as JSON, or the web page for a browser (``Accept: text/html``)."""
        # One URL, two representations: caches (the browser's own) must key on Accept.
        headers = {"Vary": "Accept", "Cache-Control": "no-cache"}
        if "text/html" in request.headers.get("accept", ""):
            return FileResponse(STATIC_DIR / "index.html", headers=headers)
        return JSONResponse(info, headers=headers)

    @app.get("/ui", tags=["server"], include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(*_validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = {404: f"{request.url.path}: no such route; the model answers POST {endpoint}",
                   405: f"{request.method} {request.url.path}: method not allowed"}.get(exc.status_code, str(exc.detail))
        return error_response(exc.status_code, message)

    @app.exception_handler(ServingError)
    async def on_serving_error(request: Request, exc: ServingError) -> JSONResponse:
        return error_response(exc.status, exc.message)

    @app.exception_handler(QueueFullError)
    async def on_queue_full(request: Request, exc: QueueFullError) -> JSONResponse:
        return error_response(503, f"server busy: {exc}")

    @app.exception_handler(NlpipeError)
    async def on_nlpipe_error(request: Request, exc: NlpipeError) -> JSONResponse:
        return error_response(422, str(exc))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        return error_response(500, f"internal error ({type(exc).__name__}); the server log has the details")

    return app


__all__ = ["ServeLimits", "create_app", "run_metadata", "BodySizeLimit"]
