"""Every limit and fault of the service, each with its status code and a JSON message naming the bad field."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator

import httpx
import pytest
from pictures import drawn_image
from serve.wire import data_uri, image_item, png_bytes

from minirerank_integrations import Candidate

QUERY = "round shapes"
TEXTS = ["circles on a plain background", "a table of numbers"]


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_body_over_the_limit_is_413(start_server) -> None:
    running = start_server(max_body_bytes=20_000)
    error = _error(httpx.post(f"{running.url}/v1/rerank", json={"query": QUERY, "documents": ["x" * 30_000]}), 413)
    assert error["param"] == "body" and "20000" in error["message"]

    def chunks():  # no Content-Length: the limit holds while the body streams in
        yield b'{"query": "q", "documents": ["'
        for _ in range(30):
            yield b"y" * 1000
        yield b'"]}'

    streamed = httpx.post(f"{running.url}/v1/rerank", content=chunks(), headers={"content-type": "application/json"})
    assert _error(streamed, 413)["param"] == "body"
    assert httpx.post(f"{running.url}/v1/rerank", json={"query": QUERY, "documents": TEXTS}).status_code == 200


def test_too_many_documents(start_server) -> None:
    running = start_server(max_documents=3)
    error = _error(httpx.post(f"{running.url}/v1/rerank", json={"query": QUERY, "documents": ["a"] * 4}), 422)
    assert error["param"] == "documents" and "more than the limit of 3" in error["message"]


def test_image_over_the_pixel_limit(start_server) -> None:
    running = start_server(max_image_pixels=64 * 64)
    documents = [image_item(data_uri(drawn_image(64, 64, 1))), image_item(data_uri(drawn_image(128, 64, 2)))]
    error = _error(httpx.post(f"{running.url}/v1/rerank", json={"query": QUERY, "documents": documents}), 422)
    assert error["param"] == "documents[1].content[0].image_url.url"
    assert "128x64 = 8192 pixels" in error["message"]


def test_url_host_not_on_the_allowlist(start_server) -> None:
    running = start_server(allowed_image_hosts=("images.example.com",))
    documents = [TEXTS[0], image_item("https://elsewhere.example.org/page.png")]
    error = _error(httpx.post(f"{running.url}/v1/rerank", json={"query": QUERY, "documents": documents}), 422)
    assert error["param"] == "documents[1].content[0].image_url.url"
    assert "'elsewhere.example.org' is not on the allowlist" in error["message"]


@pytest.fixture
def image_host() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving one PNG at /page.png: a private (loopback) address."""
    body = png_bytes(drawn_image(64, 64, 5))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    host = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=host.serve_forever, daemon=True)
    thread.start()
    yield f"http://localhost:{host.server_address[1]}/page.png"
    host.shutdown()
    host.server_close()


def test_private_address_is_refused_unless_allowed(start_server, image_host, local_engine) -> None:
    guarded = start_server(allowed_image_hosts=("localhost",))
    body = {"query": QUERY, "documents": [TEXTS[0], image_item(image_host)]}
    error = _error(httpx.post(f"{guarded.url}/v1/rerank", json=body, timeout=30), 422)
    assert error["param"] == "documents[1]" and "non-global address (loopback)" in error["message"]
    guarded.stop()

    opened = start_server(allowed_image_hosts=("localhost",), allow_private_addresses=True)
    served = httpx.post(f"{opened.url}/v1/rerank", json=body, timeout=30)
    assert served.status_code == 200, served.text
    expected = local_engine.rerank(QUERY, [TEXTS[0], Candidate(images=[png_bytes(drawn_image(64, 64, 5))])])
    assert [(r["index"], round(r["relevance_score"], 5)) for r in served.json()["results"]] == [
        (r.index, round(r.score, 5)) for r in expected
    ]


async def test_full_queue_answers_503_with_retry_after(start_server) -> None:
    running = start_server(max_queue=2, batch_wait_ms=1500, retry_after_s=3)
    async with httpx.AsyncClient(base_url=running.url, timeout=30) as client:
        admitted = [asyncio.create_task(client.post("/v1/rerank", json={"query": QUERY, "documents": TEXTS}))]
        admitted.append(asyncio.create_task(client.post("/v1/rerank", json={"query": "other", "documents": TEXTS})))
        await asyncio.sleep(0.5)  # both wait in the batch window
        refused = await client.post("/v1/rerank", json={"query": "third", "documents": TEXTS})
        assert _error(refused, 503)["type"] == "overloaded" and refused.headers["retry-after"] == "3"
        assert [r.status_code for r in await asyncio.gather(*admitted)] == [200, 200]


async def test_timeout_is_504_and_drops_the_work(start_server) -> None:
    running = start_server(request_timeout_s=0.3, batch_wait_ms=1500)
    async with httpx.AsyncClient(base_url=running.url, timeout=30) as client:
        late = await client.post("/v1/rerank", json={"query": QUERY, "documents": TEXTS})
        assert "longer than 0.3 s" in _error(late, 504)["message"]
        await asyncio.sleep(1.6)  # past the batch window: the abandoned request must not have been scored
        metrics = (await client.get("/metrics")).text
    assert _metric(metrics, "minirerank_batch_size_count") == 0 and _metric(metrics, "minirerank_queue_depth") == 0


async def test_a_client_that_disconnects_stops_costing_work(start_server) -> None:
    running = start_server(batch_wait_ms=1000)
    async with httpx.AsyncClient(base_url=running.url, timeout=0.3) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/v1/rerank", json={"query": QUERY, "documents": TEXTS})
    await asyncio.sleep(1.3)
    metrics = httpx.get(f"{running.url}/metrics").text
    assert _metric(metrics, 'minirerank_errors_total{type="client_closed"}') == 1
    assert _metric(metrics, "minirerank_batch_size_count") == 0


def test_api_key(start_server) -> None:
    running = start_server(api_key="s3cret")
    body = {"query": QUERY, "documents": TEXTS}
    assert _error(httpx.post(f"{running.url}/v1/rerank", json=body), 401)["param"] == "Authorization"
    wrong = httpx.post(f"{running.url}/v1/rerank", json=body, headers={"Authorization": "Bearer nope"})
    assert "API key" in _error(wrong, 401)["message"]
    right = httpx.post(f"{running.url}/v1/rerank", json=body, headers={"Authorization": "Bearer s3cret"})
    assert right.status_code == 200
    assert httpx.get(f"{running.url}/health").status_code == 200  # probes need no key


def test_unknown_route_is_json(server) -> None:
    assert _error(httpx.get(f"{server.url}/v1/nothing"), 404)["code"] == 404
