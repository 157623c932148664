"""Each task's router, with a fake predictor per task behind a real uvicorn in a thread (no model needed):
the run's task mounts exactly its endpoint, and the documented result keys pass the response models."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn
from server_process import post_json, request

from nlpipe.serving import TASK_ENDPOINTS, ServeLimits, create_app
from nlpipe.serving.server import bind_socket

RESULTS = {  # what each task's predictor returns for a text (see nlpipe/serving/predictors.py)
    "token-classification": lambda t: {"text": t, "entities": [
        {"entity_group": "PER", "score": 0.9, "word": t[:4], "start": 0, "end": 4}]},
    "translation": lambda t: {"text": t, "translation": t[::-1]},
    "summarization": lambda t: {"text": t, "summary": t[:5]},
    "causal-lm": lambda t: {"text": t, "continuation": " and so on", "generated_text": t + " and so on"},
}


class FakePredictor:
    batch_size = 8

    def __init__(self, task: str) -> None:
        self.task = task

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        return [RESULTS[self.task](text) for text in texts]


@contextmanager
def running(app: Any) -> Iterator[str]:
    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.mark.parametrize("task", list(TASK_ENDPOINTS))
def test_each_task_mounts_its_endpoint_only(task: str) -> None:
    app = create_app(FakePredictor(task), {"name": "fake", "task": task}, ServeLimits(max_wait_ms=1))
    with running(app) as url:
        endpoint = "/" + TASK_ENDPOINTS[task]
        texts = ["Peter met Paul.", "Zoë went home."]
        status, body = post_json(url + endpoint, {"texts": texts})
        assert status == 200, body
        assert body == {"results": [RESULTS[task](text) for text in texts]}
        for other in set(TASK_ENDPOINTS.values()) - {TASK_ENDPOINTS[task]}:
            status, body = post_json(url + "/" + other, {"texts": texts})
            assert status == 404 and endpoint in body["error"]
        status, info = request(url + "/")
        assert status == 200 and info["endpoint"] == endpoint and info["name"] == "fake"
        paths = request(url + "/openapi.json")[1]["paths"]
        assert endpoint in paths and "requestBody" in paths[endpoint]["post"]


def test_a_predictor_failure_is_a_500_json_error_and_the_server_goes_on() -> None:
    class Flaky(FakePredictor):
        def predict(self, texts: list[str]) -> list[dict[str, Any]]:
            if "crash" in texts:
                raise RuntimeError("model exploded")
            return super().predict(texts)

    with running(create_app(Flaky("translation"), limits=ServeLimits(max_wait_ms=1))) as url:
        status, body = post_json(url + "/translation", {"texts": ["crash"]})
        assert status == 500 and "RuntimeError" in body["error"] and "exploded" not in body["error"]
        assert post_json(url + "/translation", {"texts": ["fine"]}) == (200, {"results": [
            {"text": "fine", "translation": "enif"}]})
