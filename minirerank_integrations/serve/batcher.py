"""The micro-batcher: requests that arrive within a few milliseconds of each other are scored by one
:meth:`MiniReranker.rerank_many` call, so their distinct prefixes and suffixes are computed once and their pairs
share forwards. A bounded number of requests is admitted at once (beyond it :class:`QueueFull`, answered 503);
a request whose caller left (timeout, disconnect) before its batch started is dropped without costing work.

Batches are taken only when an engine slot is free (``batch_workers``, default 2: one batch prepares its inputs
outside the model lock while another holds it), so under load the requests that queue up behind a busy engine
join the next batch: the batch grows with the load instead of the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from .. import MiniReranker, RerankRequest, RerankResults
from .metrics import ServeMetrics
from .settings import ServeSettings

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """As many requests as ``max_queue`` are admitted already."""


@dataclass(eq=False)
class Job:
    """One admitted request and the future its handler awaits."""

    request: RerankRequest
    pairs: int
    future: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class MicroBatcher:
    """Admits requests, gathers them into batches within ``batch_wait_ms`` and ``batch_max_pairs``, and scores
    each batch with ``engine.rerank_many(..., return_exceptions=True)`` on a worker thread."""

    def __init__(self, engine: MiniReranker, settings: ServeSettings, metrics: ServeMetrics) -> None:
        self.engine = engine
        self.settings = settings
        self.metrics = metrics
        self._waiting: deque[Job] = deque()
        self._admitted = 0  # waiting + in a running batch
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.batch_workers)
        self._running: set[asyncio.Task] = set()
        self._loop_task: asyncio.Task | None = None

    @property
    def depth(self) -> int:
        """Requests admitted and not yet answered by the engine."""
        return self._admitted

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._gather_loop(), name="minirerank-batcher")

    def submit(self, request: RerankRequest, pairs: int) -> Job:
        """Admit ``request`` (``pairs`` candidates) or raise :class:`QueueFull`; await ``job.future``."""
        if self._admitted >= self.settings.max_queue:
            raise QueueFull
        job = Job(request, pairs)
        self._waiting.append(job)
        self._admitted += 1
        self.metrics.queue_depth.set(self._admitted)
        self._arrived.set()
        return job

    def abandon(self, job: Job) -> None:
        """The caller no longer waits (timeout, disconnect): drop the job if its batch has not started."""
        if not job.future.done():
            job.future.cancel()
        with contextlib.suppress(ValueError):  # already taken into a batch: that work finishes, unread
            self._waiting.remove(job)
            self._admitted -= 1
            self.metrics.queue_depth.set(self._admitted)

    async def close(self) -> None:
        """Finish every admitted request, then stop (SIGTERM: the server stopped accepting before this)."""
        while self._waiting or self._running:
            self._arrived.set()
            await asyncio.sleep(0.01)
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task

    async def _gather_loop(self) -> None:
        loop = asyncio.get_running_loop()
        s = self.settings
        while True:
            if not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            if s.batching:  # the first request waits a little for company
                deadline = loop.time() + s.batch_wait_ms / 1000
                while sum(j.pairs for j in self._waiting) < s.batch_max_pairs and (left := deadline - loop.time()) > 0:
                    self._arrived.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._arrived.wait(), left)
            await self._slots.acquire()
            batch = self._take()
            if not batch:
                self._slots.release()
                continue
            task = loop.create_task(self._score(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _take(self) -> list[Job]:
        batch: list[Job] = []
        pairs = 0
        while self._waiting:
            job = self._waiting[0]
            if batch and (not self.settings.batching or pairs + job.pairs > self.settings.batch_max_pairs):
                break
            self._waiting.popleft()
            batch.append(job)
            pairs += job.pairs
        return batch

    async def _score(self, batch: list[Job]) -> None:
        try:
            self.metrics.batch_size.observe(len(batch))
            self.metrics.batch_pairs.observe(sum(j.pairs for j in batch))
            try:
                results = await asyncio.to_thread(_rerank_many, self.engine, [j.request for j in batch])
            except Exception as exc:  # an engine failure is every request's answer, not the loop's end
                logger.exception("a batch of %d requests failed", len(batch))
                results = [exc] * len(batch)
            for job, result in zip(batch, results):
                if job.future.done():  # its caller left
                    continue
                if isinstance(result, BaseException):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)
        finally:
            self._admitted -= len(batch)
            self.metrics.queue_depth.set(self._admitted)
            self._slots.release()
            self._arrived.set()


def _rerank_many(engine: MiniReranker, requests: Sequence[RerankRequest]) -> list[RerankResults | Exception]:
    return list(engine.rerank_many(requests, return_exceptions=True))


__all__ = ["Job", "MicroBatcher", "QueueFull"]
