"""The micro-batcher: requests waiting for the model are scored by one :meth:`MiniReranker.score_prepared` call,
so their distinct prefixes and suffixes are computed once and their pairs share forwards. A bounded number of
requests is admitted at once (beyond it :class:`QueueFull`, answered 503).

Each request is prepared (its images keyed, decoded when new) on a worker thread as soon as it arrives, outside
the model lock; one scorer takes every prepared request whenever the model is free. So under load the batch grows
with the load (every request that arrived while the model was busy joins the next batch) and the model is never
idle while a request's images decode. When idle, the first request waits ``batch_wait_ms`` for company.

A request whose caller left (timeout, disconnect) costs no more work: before its batch it is dropped; in a
running batch its pairs are left out of the forwards not yet run, and a batch whose callers all left stops
between forwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .. import MiniReranker, RerankRequest, RerankResults
from ..engine.config import RerankConfig
from ..engine.request import PreparedRequest
from ..errors import CallCancelled, MiniRerankError
from .metrics import ServeMetrics
from .settings import ServeSettings

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """As many requests as ``max_queue`` are admitted already."""


@dataclass(eq=False)
class Job:
    """One admitted request, the future its handler awaits, and the event set when its caller leaves."""

    request: RerankRequest
    pairs: int
    future: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    gone: threading.Event = field(default_factory=threading.Event)
    prepared: PreparedRequest | None = None
    config: RerankConfig | None = None


class MicroBatcher:
    """Admits requests, prepares each on a worker thread, and scores the prepared ones in batches of at most
    ``batch_max_pairs`` pairs (one request per batch when ``batching`` is off), ``batch_workers`` batches at once."""

    def __init__(self, engine: MiniReranker, settings: ServeSettings, metrics: ServeMetrics) -> None:
        self.engine = engine
        self.settings = settings
        self.metrics = metrics
        self._preparing: set[Job] = set()
        self._ready: list[Job] = []  # prepared, waiting for the model, in arrival order
        self._admitted = 0  # preparing + ready + in a running batch
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.batch_workers)
        # Threads of their own for the batches: a batch never queues behind preparations on the default executor.
        self._scorers = ThreadPoolExecutor(settings.batch_workers, thread_name_prefix="minirerank-score")
        self._running: set[asyncio.Task] = set()  # preparations and batches
        self._batches: set[asyncio.Task] = set()  # batches being scored
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
        self._admitted += 1
        self.metrics.queue_depth.set(self._admitted)
        self._preparing.add(job)
        task = asyncio.get_running_loop().create_task(self._prepare(job))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return job

    def abandon(self, job: Job) -> None:
        """The caller no longer waits (timeout, disconnect): drop the job if its batch has not started, else
        leave its pairs out of the forwards its batch has not run yet."""
        job.gone.set()
        if not job.future.done():
            job.future.cancel()
        if job in self._ready:
            self._ready.remove(job)
            self._release(1)

    async def close(self) -> None:
        """Finish every admitted request, then stop (SIGTERM: the server stopped accepting before this)."""
        while self._ready or self._running or self._preparing:
            self._arrived.set()
            await asyncio.sleep(0.01)
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        self._scorers.shutdown(wait=False)

    async def _prepare(self, job: Job) -> None:
        config = self.engine.config  # the configuration the request is prepared, and later scored, under
        try:
            job.prepared = await asyncio.to_thread(self.engine.prepare_request, job.request, config)
            job.config = config
            if job.prepared.error is not None and not job.future.done():  # a bad request needs no model
                job.future.set_exception(job.prepared.error)
        except Exception as exc:  # preparation keeps a request's own errors; anything else is still its answer
            if not job.future.done():
                job.future.set_exception(exc)
        finally:
            self._preparing.discard(job)
        if job.gone.is_set() or job.future.done():  # answered already, or its caller left while it was prepared
            self._release(1)
            return
        self._ready.append(job)
        self._arrived.set()

    def _release(self, count: int) -> None:
        self._admitted -= count
        self.metrics.queue_depth.set(self._admitted)

    async def _gather_loop(self) -> None:
        loop = asyncio.get_running_loop()
        s = self.settings
        while True:
            if not self._ready:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            await self._slots.acquire()
            if s.batching and not self._batches:
                # The model is idle: the first request waits a little for company (those being prepared
                # and those about to arrive); a busy model makes the next batch wait anyway.
                deadline = loop.time() + s.batch_wait_ms / 1000
                while self._pairs_ready() < s.batch_max_pairs and (left := deadline - loop.time()) > 0:
                    self._arrived.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._arrived.wait(), left)
            batch = self._take()
            if not batch:
                self._slots.release()
                continue
            task = loop.create_task(self._score(batch))
            self._batches.add(task)
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            task.add_done_callback(self._batches.discard)

    def _pairs_ready(self) -> int:
        return sum(j.pairs for j in self._ready)

    def _take(self) -> list[Job]:
        """The next batch: prepared requests in arrival order under one configuration, within the pair budget."""
        batch: list[Job] = []
        pairs = 0
        for job in list(self._ready):
            if batch and (
                not self.settings.batching
                or pairs + job.pairs > self.settings.batch_max_pairs
                or job.config is not batch[0].config
            ):
                break
            batch.append(job)
            pairs += job.pairs
        del self._ready[: len(batch)]
        return batch

    async def _score(self, batch: list[Job]) -> None:
        try:
            self.metrics.batch_size.observe(len(batch))
            self.metrics.batch_pairs.observe(sum(j.pairs for j in batch))
            results: Sequence[RerankResults | BaseException]
            try:
                results = await asyncio.get_running_loop().run_in_executor(
                    self._scorers, _score_prepared, self.engine, batch
                )
            except CallCancelled as exc:  # every caller of the batch left: it stopped between forwards
                results = [exc] * len(batch)
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
            self._release(len(batch))
            self._slots.release()
            self._arrived.set()


def _score_prepared(engine: MiniReranker, batch: Sequence[Job]) -> list[RerankResults | MiniRerankError]:
    items = [(job.request, job.prepared) for job in batch]
    return engine.score_prepared(items, batch[0].config, abandoned=[job.gone for job in batch])  # type: ignore[arg-type]


__all__ = ["Job", "MicroBatcher", "QueueFull"]
