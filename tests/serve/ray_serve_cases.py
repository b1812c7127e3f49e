"""Two Ray Serve replicas on 127.0.0.1 sharing one real redis-server: a page pre-cached through one replica is read
from Redis, never computed, by the other."""

from __future__ import annotations

import time

import httpx
import pytest
import ray
from pictures import drawn_image
from serve.wire import data_uri, image_item

from minirerank_integrations.serve import ServeSettings, free_port, ray_serve

QUERY = "round shapes"


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " "))


@pytest.fixture
def ray_replicas(redis_server):
    port = free_port()
    options = {"cache_url": redis_server.url}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray_serve.start(options, ServeSettings(), replicas=2, host="127.0.0.1", port=port, replica_cpus=0.5)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        ray_serve.stop()


def _by_instance(url: str, path: str, want: int = 2, tries: int = 200) -> dict[str, httpx.Response]:
    """GET ``path`` until ``want`` replicas have answered; each replica's last answer."""
    seen: dict[str, httpx.Response] = {}
    for _ in range(tries):
        response = httpx.get(f"{url}{path}", timeout=30)
        seen[response.headers["x-minirerank-instance"]] = response
        if len(seen) == want:
            break
        time.sleep(0.02)
    return seen


def test_two_ray_replicas_share_one_redis_store(ray_replicas) -> None:
    url = ray_replicas
    assert len(_by_instance(url, "/health")) == 2, "both replicas answer"
    documents = [image_item(data_uri(drawn_image(96, 64, 51))), image_item(data_uri(drawn_image(64, 64, 52)))]
    report = httpx.post(f"{url}/v1/precache", json={"documents": documents}, timeout=120)
    assert [r["status"] for r in report.json()["results"]] == ["stored", "stored"]
    precached_by = report.headers["x-minirerank-instance"]
    answered: dict[str, list] = {}
    for _ in range(60):  # until the other replica has answered a rerank of the pre-cached pages
        response = httpx.post(f"{url}/v1/rerank", json={"query": QUERY, "documents": documents}, timeout=120)
        assert response.status_code == 200, response.text
        instance = response.headers["x-minirerank-instance"]
        answered.setdefault(instance, []).append(
            [(r["index"], round(r["relevance_score"], 6)) for r in response.json()["results"]]
        )
        if len(answered) == 2:
            break
    assert len(answered) == 2
    ranked = [results for runs in answered.values() for results in runs]
    assert all(results == ranked[0] for results in ranked), "every replica gives the same scores"
    metrics = _by_instance(url, "/metrics")
    other = next(instance for instance in metrics if instance != precached_by)
    text = metrics[other].text
    assert _metric(text, "minirerank_prefix_misses_total") == 0, "the other replica computed nothing"
    assert _metric(text, "minirerank_prefix_hits_total") >= 2, "it read both pages from Redis"
