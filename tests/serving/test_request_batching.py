"""The batching queue with a fake predictor: grouping, order, limits, and isolation of a failing request."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from nlpipe.serving.batching import BatchingQueue, QueueFullError


class RecordingPredictor:
    """Upper-cases texts; records each call's texts and the thread it ran on; fails on texts containing 'boom'."""

    task = "translation"
    batch_size = 8

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[list[str]] = []
        self.threads: set[int] = set()
        self.delay = delay

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        self.calls.append(list(texts))
        self.threads.add(threading.get_ident())
        if any("boom" in text for text in texts):
            raise ValueError("boom")
        time.sleep(self.delay)  # the model's time: the event loop must keep running meanwhile
        return [{"text": text, "translation": text.upper()} for text in texts]


def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, timeout=30))


def test_concurrent_requests_share_model_calls_and_get_their_own_answers() -> None:
    predictor = RecordingPredictor(delay=0.01)

    async def main() -> list[list[dict]]:
        queue = BatchingQueue(predictor, max_batch_size=8, max_wait_s=0.05)
        queue.start()
        try:
            requests = [[f"r{i}-a", f"r{i}-b"] if i % 3 == 0 else [f"r{i}"] for i in range(30)]
            answers = await asyncio.gather(*(queue.submit(texts) for texts in requests))
            assert queue.requests == 30
            return list(zip(requests, answers, strict=True))
        finally:
            await queue.stop()

    for texts, answer in run(main()):
        assert [r["translation"] for r in answer] == [t.upper() for t in texts]
    sizes = [len(call) for call in predictor.calls]
    assert sum(sizes) == 40 and max(sizes) <= 8
    assert len(predictor.calls) <= 8  # 40 texts in batches of up to 8: grouped, not one call per request
    assert threading.get_ident() not in predictor.threads  # the model ran off the event loop's thread


def test_a_request_larger_than_the_batch_runs_alone_and_whole() -> None:
    predictor = RecordingPredictor()

    async def main() -> list[dict]:
        queue = BatchingQueue(predictor, max_batch_size=4, max_wait_s=0.001)
        queue.start()
        try:
            return await queue.submit([f"t{i}" for i in range(10)])
        finally:
            await queue.stop()

    assert [r["text"] for r in run(main())] == [f"t{i}" for i in range(10)]
    assert predictor.calls == [[f"t{i}" for i in range(10)]]


def test_a_failing_request_fails_alone() -> None:
    predictor = RecordingPredictor()

    async def main() -> list[Any]:
        queue = BatchingQueue(predictor, max_batch_size=16, max_wait_s=0.05)
        queue.start()
        try:
            return await asyncio.gather(queue.submit(["fine"]), queue.submit(["boom"]), queue.submit(["also fine"]),
                                        return_exceptions=True)
        finally:
            await queue.stop()

    fine, failed, also_fine = run(main())
    assert fine == [{"text": "fine", "translation": "FINE"}]
    assert isinstance(failed, ValueError)
    assert also_fine == [{"text": "also fine", "translation": "ALSO FINE"}]
    assert predictor.calls[0] == ["fine", "boom", "also fine"]  # grouped first, then retried one by one


def test_a_full_queue_refuses_new_requests() -> None:
    async def main() -> None:
        queue = BatchingQueue(RecordingPredictor(), max_queued=2)  # worker not started: nothing is taken
        pending = [asyncio.ensure_future(queue.submit(["a"])) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFullError):
            await queue.submit(["b"])
        await queue.stop()  # what was waiting fails instead of hanging
        for future in pending:
            with pytest.raises(RuntimeError, match="shutting down"):
                await future

    run(main())
