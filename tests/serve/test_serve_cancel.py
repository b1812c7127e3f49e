"""A request whose caller leaves stops costing work already started: a timed-out or disconnected request's pairs
are left out of the forwards its batch has not run, a batch whose callers all left stops between forwards, and the
other requests of the batch get their scores, equal to the in-process engine's."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from minirerank_integrations import MiniReranker
from minirerank_integrations.serve import BackgroundServer, ServeSettings, create_app

QUERY = "round shapes"
MANY = [f"document {i}: a note about shapes, colours and tables number {i}" for i in range(200)]
FEW = ["circles on a plain background", "a table of numbers", "red squares"]


@pytest.fixture(scope="module")
def one_pair_engine() -> MiniReranker:
    """The demo model scoring one pair per forward, so a long request runs many forwards to stop between."""
    engine = MiniReranker.from_pretrained()
    engine.config = engine.config.model_copy(update={"batch_size": 1})
    return engine


@pytest.fixture
def serve(one_pair_engine) -> Iterator:
    started: list[BackgroundServer] = []

    def start(**settings: object) -> BackgroundServer:
        app = create_app(one_pair_engine, ServeSettings(**settings))  # type: ignore[arg-type]
        started.append(BackgroundServer(app).start())
        return started[-1]

    yield start
    for running in started:
        running.stop()


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " "))


async def _settled(client: httpx.AsyncClient) -> str:
    """/metrics once nothing is admitted any more (the engine has let go of every batch)."""
    for _ in range(600):
        text = (await client.get("/metrics")).text
        if _metric(text, "minirerank_queue_depth") == 0:
            return text
        await asyncio.sleep(0.05)
    raise AssertionError("the server still holds requests after 30 s")


async def test_a_timed_out_batch_stops_between_forwards(serve, one_pair_engine) -> None:
    running = serve(request_timeout_s=0.5, batch_wait_ms=0)
    async with httpx.AsyncClient(base_url=running.url, timeout=60) as client:
        before = one_pair_engine.counters.pair_passes
        late = await client.post("/v1/rerank", json={"query": QUERY, "documents": MANY})
        assert late.status_code == 504 and "longer than 0.5 s" in late.json()["error"]["message"]
        metrics = await _settled(client)
    computed = one_pair_engine.counters.pair_passes - before
    assert _metric(metrics, "minirerank_batch_size_count") == 1  # its batch had started
    assert computed < len(MANY), f"all {computed} pairs were computed after the request timed out"
    assert _metric(metrics, "minirerank_pairs_computed") < len(MANY)


async def test_a_request_that_leaves_drops_its_pairs_and_the_others_are_scored(
    serve, one_pair_engine, local_engine
) -> None:
    running = serve(batch_wait_ms=400)
    before = one_pair_engine.counters.pair_passes
    async with (
        httpx.AsyncClient(base_url=running.url, timeout=0.6) as leaving,
        httpx.AsyncClient(base_url=running.url, timeout=60) as staying,
    ):
        gone = asyncio.create_task(leaving.post("/v1/rerank", json={"query": QUERY, "documents": MANY}))
        await asyncio.sleep(0.05)  # the long request first: the other's pairs come after its in the batch
        kept = asyncio.create_task(staying.post("/v1/rerank", json={"query": "tables", "documents": FEW}))
        with pytest.raises(httpx.ReadTimeout):
            await gone
        answer = await kept
        metrics = await _settled(staying)
    assert answer.status_code == 200, answer.text
    expected = local_engine.rerank("tables", FEW)
    got = answer.json()["results"]
    assert [r["index"] for r in got] == [r.index for r in expected]
    assert max(abs(r["relevance_score"] - e.score) for r, e in zip(got, expected)) < 1e-5
    assert _metric(metrics, "minirerank_batch_size_sum") == 2  # both were in one batch
    assert one_pair_engine.counters.pair_passes - before < len(MANY) + len(FEW)
    assert _metric(metrics, 'minirerank_errors_total{type="client_closed"}') == 1
