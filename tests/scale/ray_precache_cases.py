"""Pre-caching on a local Ray cluster (2 CPUs) into a real redis-server: 2 actors, 40 documents, an actor killed."""

from __future__ import annotations

import threading
import time

import psutil
import pytest
import ray
from pictures import drawn_image

from minirerank_integrations import Candidate, MiniReranker, Query
from minirerank_integrations.scale import precache_on_ray
from minirerank_integrations.testing import RedisServer

QUERY = Query(text="a red circle on the left")


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Candidate]:
    """40 small documents: image files every worker can read, and short texts."""
    folder = tmp_path_factory.mktemp("corpus")
    docs = []
    for i in range(40):
        if i % 4 == 3:
            docs.append(Candidate(text=f"note {i}: a small text document", id=f"t{i}"))
            continue
        path = folder / f"page{i}.png"
        drawn_image(48 + 16 * (i % 3), 48, seed=700 + i).save(path)
        docs.append(Candidate(images=[str(path)], id=f"p{i}"))
    return docs


def test_two_actors_precache_40_documents_then_every_query_hits(
    ray_cluster, shared_redis, corpus, tiny4_path, tmp_path
):
    bad = Candidate(images=[str(tmp_path / "missing.png")], id="missing")
    report = precache_on_ray(
        [*corpus, bad],
        cache_url=shared_redis.url,
        cache_namespace="run-a",
        model=tiny4_path,
        config="paper",
        workers=2,
        batch_size=4,
        progress=False,
    )
    assert report.documents == 41 and len(report.stored) == 40 and report.present == []
    assert [(f.id, "missing.png" in f.reason) for f in report.failures] == [("missing", True)]
    assert report.bytes_stored > 0 and report.documents_per_second > 0
    reader = MiniReranker.from_pretrained(
        tiny4_path, config="paper", cache_url=shared_redis.url, cache_namespace="run-a"
    )
    reader.rerank(QUERY, corpus)
    assert (reader.counters.prefix_hits, reader.counters.prefix_computations) == (40, 0)


def _precache_workers() -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if "_PrecacheWorker" in " ".join(process.info["cmdline"] or []):
            found.append(process)
    return found


def test_a_killed_actor_loses_nothing_reported_stored_and_a_rerun_stores_only_the_rest(
    ray_cluster, shared_redis, corpus, tiny4_path
):
    namespace = "run-b"
    client = shared_redis.client()
    options = dict(
        cache_url=shared_redis.url,
        cache_namespace=namespace,
        model=tiny4_path,
        config="paper",
        workers=2,
        batch_size=2,
        progress=False,
    )
    result: dict = {}
    run = threading.Thread(target=lambda: result.setdefault("report", precache_on_ray(corpus, **options)))
    run.start()
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and run.is_alive():
        stored = sum(1 for _ in client.scan_iter(match=f"{namespace}:prefix:*"))
        workers = _precache_workers()
        if stored >= 2 and workers:
            killed = (stored, workers[0].pid)
            workers[0].kill()
        time.sleep(0.02)
    run.join(timeout=300)
    assert killed is not None and killed[0] < len(corpus), "the actor was not killed while the run was going"
    first = result["report"]
    assert first.documents == len(corpus) and not first.failures
    assert len(first.stored) + len(first.present) == len(corpus)

    names = sorted(client.scan_iter(match=f"{namespace}:prefix:*"))
    assert len(names) == len(corpus)  # every document reported stored (or found stored) is there
    client.delete(*names[:5])  # then five entries are lost (evicted, say)
    rerun = precache_on_ray(corpus, **options)
    assert len(rerun.stored) == 5 and len(rerun.present) == len(corpus) - 5
    assert sum(1 for _ in client.scan_iter(match=f"{namespace}:prefix:*")) == len(corpus)
