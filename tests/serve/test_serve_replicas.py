"""Two replicas (two engines, two servers) on one Redis prefix store: a page pre-cached through one replica is
warm on the other, and both answer the same scores."""

from __future__ import annotations

import httpx
from pictures import drawn_image
from serve.wire import data_uri, image_item

from minirerank_integrations import MiniReranker
from minirerank_integrations.serve import BackgroundServer, ServeSettings, create_app

QUERY = "round shapes"


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " "))


def test_a_page_precached_through_one_replica_is_warm_on_the_other(redis_server) -> None:
    engines = [MiniReranker.from_pretrained(cache_url=redis_server.url) for _ in range(2)]
    documents = [image_item(data_uri(drawn_image(96, 64, 41))), image_item(data_uri(drawn_image(64, 96, 42)))]
    with (
        BackgroundServer(create_app(engines[0], ServeSettings())) as first,
        BackgroundServer(create_app(engines[1], ServeSettings())) as second,
    ):
        report = httpx.post(f"{first.url}/v1/precache", json={"documents": documents}, timeout=60).json()
        assert [r["status"] for r in report["results"]] == ["stored", "stored"]
        answers = [
            httpx.post(f"{s.url}/v1/rerank", json={"query": QUERY, "documents": documents}, timeout=60).json()
            for s in (second, first)
        ]
        metrics = httpx.get(f"{second.url}/metrics").text
    assert _metric(metrics, "minirerank_prefix_hits_total") == 2  # both pages read from Redis
    assert _metric(metrics, "minirerank_prefix_misses_total") == 0  # nothing computed on this replica
    assert [(r["index"], round(r["relevance_score"], 6)) for r in answers[0]["results"]] == [
        (r["index"], round(r["relevance_score"], 6)) for r in answers[1]["results"]
    ]
