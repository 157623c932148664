"""Request batching across concurrent clients: one asyncio queue and one worker.

Each request puts its texts on the queue and awaits a future. The worker takes the oldest request,
then keeps taking waiting requests until it holds ``max_batch_size`` texts or ``max_wait_s`` has
passed since the first one, runs the predictor once on all their texts in a worker thread (the event
loop keeps accepting requests meanwhile), and hands each request its own slice of the results.
A request larger than ``max_batch_size`` runs alone; the predictor splits it further.

If a grouped call fails, each request of the group is retried alone, so one bad text fails only
the request that sent it.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .predictors import Predictor


class QueueFullError(Exception):
    """More requests are waiting than the server accepts; the client should retry later."""


@dataclass
class _Job:
    texts: list[str]
    future: asyncio.Future = field(repr=False)


class BatchingQueue:
    """Group concurrent requests into batches for one `Predictor`.

    Args:
        predictor: the model; called from one worker thread, one batch at a time.
        max_batch_size: most texts per predictor call (a single larger request is still run, alone).
        max_wait_s: how long the first request of a batch waits for others to join it.
        max_queued: most requests waiting; beyond it `submit` raises `QueueFullError`.
    """

    def __init__(self, predictor: Predictor, max_batch_size: int = 32, max_wait_s: float = 0.005,
                 max_queued: int = 1024) -> None:
        self.predictor = predictor
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=max_queued)
        self._carry: _Job | None = None  # a request that did not fit the previous batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nlpipe-model")
        self._worker: asyncio.Task | None = None
        self.batches = 0  # predictor calls so far
        self.requests = 0  # requests answered so far

    @property
    def queued(self) -> int:
        """Requests waiting for the model."""
        return self._queue.qsize() + (self._carry is not None)

    def start(self) -> None:
        """Start the worker (call inside the running event loop)."""
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="nlpipe-batching")

    async def stop(self) -> None:
        """Stop the worker, fail what is still waiting, and release the model thread."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        pending = [self._carry] if self._carry is not None else []
        self._carry = None
        while not self._queue.empty():
            pending.append(self._queue.get_nowait())
        for job in pending:
            if not job.future.done():
                job.future.set_exception(RuntimeError("the server is shutting down"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, texts: list[str]) -> list[dict[str, Any]]:
        """Predict for one request's texts, batched with whatever else is waiting.

        Raises:
            QueueFullError: too many requests are waiting.
            Exception: whatever the predictor raised for these texts.
        """
        job = _Job(list(texts), asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise QueueFullError(f"{self._queue.maxsize} requests are already waiting; retry later") from None
        return await job.future

    async def _next_batch(self) -> list[_Job]:
        """Wait for a request, then gather more until the batch is full or the wait is over."""
        loop = asyncio.get_running_loop()
        first = self._carry if self._carry is not None else await self._queue.get()
        self._carry = None
        batch, size = [first], len(first.texts)
        deadline = loop.time() + self.max_wait_s
        while size < self.max_batch_size:
            remaining = deadline - loop.time()
            try:
                job = self._queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(
                    self._queue.get(), remaining)
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
            if size + len(job.texts) > self.max_batch_size:
                self._carry = job  # first in the next batch: order is kept
                break
            batch.append(job)
            size += len(job.texts)
        return [job for job in batch if not job.future.done()]  # skip clients that went away

    async def _predict(self, texts: list[str]) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(self._executor, self.predictor.predict, texts)
        if len(results) != len(texts):
            raise RuntimeError(f"the predictor returned {len(results)} results for {len(texts)} texts")
        self.batches += 1
        return results

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            try:
                results = await self._predict([text for job in batch for text in job.texts])
            except Exception as exc:  # noqa: BLE001 - handed to the requests, never kills the worker
                if len(batch) == 1:
                    self._settle(batch[0], exception=exc)
                    continue
                for job in batch:  # find the request that failed; the others still get answers
                    try:
                        self._settle(job, results=await self._predict(job.texts))
                    except Exception as single_exc:  # noqa: BLE001
                        self._settle(job, exception=single_exc)
                continue
            start = 0
            for job in batch:
                self._settle(job, results=results[start : start + len(job.texts)])
                start += len(job.texts)

    def _settle(self, job: _Job, *, results: list[dict[str, Any]] | None = None,
                exception: BaseException | None = None) -> None:
        self.requests += 1
        if job.future.done():  # the client disconnected and its handler was cancelled
            return
        if exception is not None:
            job.future.set_exception(exception)
        else:
            job.future.set_result(results)


__all__ = ["BatchingQueue", "QueueFullError"]
