"""``minirerank serve`` as its own process: SIGTERM stops accepting and finishes every request in flight, and the
official Cohere SDK reranks against it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import cohere
import httpx
import pytest

from minirerank_integrations.serve import free_port

QUERY = "round shapes"
TEXTS = ["circles on a plain background", "a table of numbers", "ellipses and rings"]


@pytest.fixture(scope="module")
def served_process() -> Iterator[tuple[subprocess.Popen, str]]:
    """``python -m minirerank_integrations.cli serve`` on a free port, requests waiting 400 ms for company, torch
    on one thread (the batches of a merged call scored on threads of their own)."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "minirerank_integrations.cli",
            "serve",
            "--port",
            str(port),
            "--batch-wait-ms",
            "400",
            "--api-key",
            "k3y",
            "--torch-threads",  # one torch thread: a merged call's batches run on threads of their own
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=os.environ | {"TOKENIZERS_PARALLELISM": "false"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read().decode() if process.stdout else "exited"
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    else:
        process.kill()
        pytest.fail("the server did not become ready within 120 s")
    yield process, url
    if process.poll() is None:
        process.kill()
        process.wait(10)


def test_cohere_sdk_reranks_against_the_server(served_process, local_engine) -> None:
    _, url = served_process
    client = cohere.ClientV2(base_url=url, api_key="k3y")
    response = client.rerank(model="minirerank-demo", query=QUERY, documents=TEXTS, top_n=2)
    expected = local_engine.rerank(QUERY, TEXTS, top_n=2)
    assert [r.index for r in response.results] == [r.index for r in expected]
    assert all(abs(got.relevance_score - want.score) <= 1e-5 for got, want in zip(response.results, expected))
    with pytest.raises(cohere.core.api_error.ApiError) as refused:
        cohere.ClientV2(base_url=url, api_key="wrong").rerank(model="minirerank-demo", query=QUERY, documents=TEXTS)
    assert refused.value.status_code == 401


def test_sigterm_finishes_the_requests_in_flight(served_process, local_engine) -> None:
    process, url = served_process
    queries = [f"question {i}" for i in range(8)]

    async def drive() -> list[httpx.Response]:
        headers = {"Authorization": "Bearer k3y"}
        async with httpx.AsyncClient(base_url=url, timeout=60, headers=headers) as client:
            sent = [
                asyncio.create_task(client.post("/v1/rerank", json={"query": q, "documents": TEXTS})) for q in queries
            ]
            await asyncio.sleep(0.2)  # all are in the server's batch window now
            process.send_signal(signal.SIGTERM)
            return await asyncio.gather(*sent)

    answers = asyncio.run(drive())
    assert [a.status_code for a in answers] == [200] * len(queries)
    for query, answer in zip(queries, answers):
        expected = local_engine.rerank(query, TEXTS)
        assert [r["index"] for r in answer.json()["results"]] == [r.index for r in expected]
    # uvicorn re-raises the signal once it has shut down, so a process manager sees a SIGTERM exit.
    assert process.wait(30) in (0, -signal.SIGTERM)
    log = process.stdout.read().decode() if process.stdout else ""
    assert "Shutting down" in log and "Finished server process" in log, log
    with pytest.raises(httpx.TransportError):  # stopped: nothing listens any more
        httpx.get(f"{url}/health", timeout=2)
