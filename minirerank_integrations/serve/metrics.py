"""Prometheus metrics of one service (prometheus-client), in a registry of its own so that several apps in one
process (tests, notebooks) do not share counters."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from .. import WorkCounters

#: Seconds; a warm demo-model request takes milliseconds, a cold 2B one seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_REQUEST_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
BATCH_PAIR_BUCKETS = (1, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class _PrefixCollector(Collector):
    """The engine's own prefix counters, read at scrape time (the engine counts; the service only reports)."""

    def __init__(self, counters: Callable[[], WorkCounters | None]) -> None:
        self._counters = counters

    def collect(self) -> Iterator[CounterMetricFamily]:
        counters = self._counters()
        if counters is None:  # the model is still loading
            return
        hits = CounterMetricFamily("minirerank_prefix_hits", "prefixes read from the prefix store")
        hits.add_metric([], counters.prefix_hits)
        misses = CounterMetricFamily("minirerank_prefix_misses", "prefixes computed (not in the store)")
        misses.add_metric([], counters.prefix_computations)
        computed = CounterMetricFamily(
            "minirerank_pairs_computed", "pairs run through the per-pair layers (a pair dropped or repeated: none)"
        )
        computed.add_metric([], counters.pair_passes + counters.single_passes)
        yield hits
        yield misses
        yield computed


class ServeMetrics:
    """Requests, pairs, latency, batch sizes, queue depth, prefix hits and misses, errors by type."""

    def __init__(self, counters: Callable[[], WorkCounters | None]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "minirerank_requests", "HTTP requests answered, by endpoint and status", ["endpoint", "status"], registry=r
        )
        self.pairs = Counter("minirerank_pairs", "(query, document) pairs scored", registry=r)
        self.latency = Histogram(
            "minirerank_request_latency_seconds",
            "arrival to answer, by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "minirerank_batch_size", "requests merged into one engine call", buckets=BATCH_REQUEST_BUCKETS, registry=r
        )
        self.batch_pairs = Histogram(
            "minirerank_batch_pairs", "pairs in one engine call", buckets=BATCH_PAIR_BUCKETS, registry=r
        )
        self.queue_depth = Gauge(
            "minirerank_queue_depth", "requests admitted and not yet answered by the engine", registry=r
        )
        self.errors = Counter("minirerank_errors", "error answers, by type", ["type"], registry=r)
        r.register(_PrefixCollector(counters))

    def render(self) -> bytes:
        """The text exposition format, for ``GET /metrics``."""
        return generate_latest(self.registry)
