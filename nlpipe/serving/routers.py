"""One FastAPI router per task: ``POST /entities``, ``/translation``, ``/summary``, ``/continuation``.

Every endpoint takes ``{"texts": ["...", ...]}`` and answers ``{"results": [...]}``, one result per
text in order. The server mounts only the router of its run's task.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from .predictors import TASK_ENDPOINTS


class ServingError(Exception):
    """A request the server refuses: answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class TextsRequest(BaseModel):
    """The body of every task endpoint."""

    model_config = ConfigDict(extra="forbid")
    texts: list[StrictStr] = Field(description="The texts, one result each (a batch of one is fine).",
                                   examples=[["EU rejects German call to boycott British lamb."]])


class Entity(BaseModel):
    entity_group: str = Field(description="The entity type, e.g. PER, ORG, LOC, MISC.")
    score: float = Field(description="Mean probability of the entity's words (CRF marginals for CRF taggers).")
    word: str = Field(description="The entity as written: text[start:end].")
    start: int = Field(description="Character offset where the entity starts.")
    end: int = Field(description="Character offset just past the entity.")


class EntitiesResult(BaseModel):
    text: str
    entities: list[Entity]


class TranslationResult(BaseModel):
    text: str
    translation: str


class SummaryResult(BaseModel):
    text: str
    summary: str


class ContinuationResult(BaseModel):
    text: str
    continuation: str = Field(description="The generated text after the prompt.")
    generated_text: str = Field(description="Prompt + continuation.")


class EntitiesResponse(BaseModel):
    results: list[EntitiesResult]


class TranslationResponse(BaseModel):
    results: list[TranslationResult]


class SummaryResponse(BaseModel):
    results: list[SummaryResult]


class ContinuationResponse(BaseModel):
    results: list[ContinuationResult]


def check_texts(texts: list[str], max_texts: int, max_chars: int) -> None:
    """Refuse what the model should not be asked: no texts, too many, blank or too long ones.

    Raises:
        ServingError: 422 naming the offending text (``texts[i]``) and the limit.
    """
    if not texts:
        raise ServingError(422, 'texts: the list is empty; send {"texts": ["a sentence", ...]}')
    if len(texts) > max_texts:
        raise ServingError(422, f"texts: {len(texts):,} texts in one request is too many (limit {max_texts:,}); "
                                "split them over several requests")
    for index, text in enumerate(texts):
        if not text.strip():
            raise ServingError(422, f"texts[{index}]: empty text; send non-empty texts")
        if len(text) > max_chars:
            raise ServingError(422, f"texts[{index}]: {len(text):,} characters is too long (limit {max_chars:,}); "
                                    "split it")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:  # JSON "\ud800" decodes to a lone surrogate the tokenizer cannot take
            raise ServingError(422, f"texts[{index}]: character {exc.start} is an unpaired surrogate "
                                    f"({text[exc.start]!r}); send valid Unicode") from None


def validation_message(errors: list[Any]) -> str:
    """One line naming the first wrong field (``body.texts[2]``) and what is wrong with it."""
    # an unknown field ("text" for "texts") explains the missing one better than "Field required"
    errors = sorted(errors, key=lambda error: error.get("type") != "extra_forbidden")
    first = errors[0] if errors else {}
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    where = "body" + "".join(f"[{part}]" if part.isdigit() else f".{part}" for part in loc)
    if first.get("type") == "extra_forbidden":
        return f'{where}: unknown field; send {{"texts": ["a sentence", ...]}}'
    if not loc:
        got = type(first.get("input")).__name__
        got = {"list": "an array", "str": "a string", "NoneType": "null", "int": "a number", "float": "a number",
               "bool": "a boolean"}.get(got, got)
        return f'body: {got} where a JSON object was expected; send {{"texts": ["a sentence", ...]}}'
    more = "" if len(errors) <= 1 else f" (and {len(errors) - 1} more)"
    return f"{where}: {first.get('msg', 'invalid')}{more}"


async def read_texts_request(request: Request) -> TextsRequest:
    """The request body as a `TextsRequest`, read as JSON whatever the Content-Type (``curl -d`` sends a form type).

    Raises:
        ServingError: 400 for an empty or unreadable body, 422 for wrong fields or types.
    """
    raw = await request.body()
    if not raw.strip():
        raise ServingError(400, 'body: empty; send JSON {"texts": ["a sentence", ...]}')
    try:
        value = json.loads(raw)
    except UnicodeDecodeError:
        raise ServingError(400, "body: not UTF-8 text; send JSON encoded as UTF-8") from None
    except ValueError as exc:
        raise ServingError(400, f'body: not valid JSON ({exc}); send {{"texts": ["a sentence", ...]}}') from None
    except RecursionError:
        raise ServingError(400, 'body: JSON nested too deeply; send {"texts": ["a sentence", ...]}') from None
    try:
        return TextsRequest.model_validate(value)
    except ValidationError as exc:
        raise ServingError(422, validation_message(exc.errors())) from None


# The body is read by `read_texts_request`, so FastAPI is told its schema for /openapi.json.
BODY_SCHEMA = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": TextsRequest.model_json_schema()}}}}


async def predict_request(request: Request, body: TextsRequest) -> dict[str, Any]:
    """Check the texts against the server's limits, then predict them through the batching queue."""
    limits = request.app.state.limits
    check_texts(body.texts, limits.max_texts, limits.max_chars)
    return {"results": await request.app.state.queue.submit(body.texts)}


def entities_router() -> APIRouter:
    """``POST /entities`` for token-classification runs."""
    router = APIRouter(tags=["entities"])

    @router.post("/entities", response_model=EntitiesResponse, summary="Named entities in each text",
                 openapi_extra=BODY_SCHEMA)
    async def entities(request: Request, body: TextsRequest = Depends(read_texts_request)) -> dict[str, Any]:
        """Entities per text with types, scores and character offsets (as ``pipeline("ner",
        aggregation_strategy="simple")`` gives them)."""
        return await predict_request(request, body)

    return router


def translation_router() -> APIRouter:
    """``POST /translation`` for translation runs."""
    router = APIRouter(tags=["translation"])

    @router.post("/translation", response_model=TranslationResponse, summary="Translate each text",
                 openapi_extra=BODY_SCHEMA)
    async def translation(request: Request, body: TextsRequest = Depends(read_texts_request)) -> dict[str, Any]:
        """The translation of each text, decoded with the run's generation settings."""
        return await predict_request(request, body)

    return router


def summary_router() -> APIRouter:
    """``POST /summary`` for summarization runs."""
    router = APIRouter(tags=["summary"])

    @router.post("/summary", response_model=SummaryResponse, summary="Summarize each text",
                 openapi_extra=BODY_SCHEMA)
    async def summary(request: Request, body: TextsRequest = Depends(read_texts_request)) -> dict[str, Any]:
        """The summary of each text, decoded with the run's generation settings."""
        return await predict_request(request, body)

    return router


def continuation_router() -> APIRouter:
    """``POST /continuation`` for language-model runs."""
    router = APIRouter(tags=["continuation"])

    @router.post("/continuation", response_model=ContinuationResponse, summary="Continue each text",
                 openapi_extra=BODY_SCHEMA)
    async def continuation(request: Request, body: TextsRequest = Depends(read_texts_request)) -> dict[str, Any]:
        """The continuation of each prompt, with the run's generation settings (``generate:`` in its recipe)."""
        return await predict_request(request, body)

    return router


ROUTERS: dict[str, Callable[[], APIRouter]] = {
    "entities": entities_router,
    "translation": translation_router,
    "summary": summary_router,
    "continuation": continuation_router,
}


def router_for_task(task: str) -> APIRouter:
    """The router serving a recipe task."""
    return ROUTERS[TASK_ENDPOINTS[task]]()


__all__ = ["ServingError", "TextsRequest", "check_texts", "router_for_task", "ROUTERS"]
