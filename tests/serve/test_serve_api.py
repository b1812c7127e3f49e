"""The endpoints against a real uvicorn server: scores equal the in-process engine's, in every schema."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from pictures import drawn_image
from serve.wire import data_uri, image_item, png_bytes

from minirerank_integrations import Candidate
from minirerank_integrations.serve import BackgroundServer, ServeSettings, create_app

QUERY = "a picture of round shapes"
TEXTS = ["round shapes on a plain background", "a list of quarterly revenue figures", "circles and ellipses"]


@pytest.fixture(scope="module")
def pictures():
    return [drawn_image(64, 64, 11), drawn_image(96, 64, 12), drawn_image(64, 96, 13)]


def _wire_documents(pictures) -> list:
    return [
        TEXTS[0],
        image_item(data_uri(pictures[0])),
        TEXTS[1],
        image_item(data_uri(pictures[1]), text="a chart"),
        {"text": TEXTS[2]},  # Cohere v1 / Jina form
        image_item(data_uri(pictures[2])),
    ]


def _local_candidates(pictures) -> list:
    return [
        TEXTS[0],
        Candidate(images=[png_bytes(pictures[0])]),
        TEXTS[1],
        Candidate(text="a chart", images=[png_bytes(pictures[1])]),
        TEXTS[2],
        Candidate(images=[png_bytes(pictures[2])]),
    ]


def test_rerank_scores_equal_the_in_process_engine(server, local_engine, pictures) -> None:
    body = {"model": "minirerank-demo", "query": QUERY, "documents": _wire_documents(pictures)}
    response = httpx.post(f"{server.url}/v1/rerank", json=body, timeout=60)
    assert response.status_code == 200, response.text
    served = response.json()
    expected = local_engine.rerank(QUERY, _local_candidates(pictures))
    assert [r["index"] for r in served["results"]] == [r.index for r in expected]
    for got, want in zip(served["results"], expected):
        assert abs(got["relevance_score"] - want.score) <= 1e-5
    assert served["model"] == "minirerank-demo" and served["id"]
    assert served["usage"]["prompt_tokens"] > 0 and served["usage"]["total_tokens"] == served["usage"]["prompt_tokens"]
    assert "document" not in served["results"][0] and "skipped" not in served


def test_rerank_alias_top_n_and_returned_documents(server, local_engine) -> None:
    body = {"query": QUERY, "documents": TEXTS, "top_n": 2, "return_documents": True}
    served = httpx.post(f"{server.url}/rerank", json=body, timeout=60).json()
    expected = local_engine.rerank(QUERY, TEXTS, top_n=2)
    assert [(r["index"], r["document"]["text"]) for r in served["results"]] == [
        (r.index, TEXTS[r.index]) for r in expected
    ]
    assert all(abs(g["relevance_score"] - w.score) <= 1e-5 for g, w in zip(served["results"], expected))


def test_v2_rerank(server, local_engine) -> None:
    served = httpx.post(
        f"{server.url}/v2/rerank", json={"model": "minirerank-demo", "query": QUERY, "documents": TEXTS}, timeout=60
    ).json()
    expected = local_engine.rerank(QUERY, TEXTS)
    assert [(r["index"], round(r["relevance_score"], 5)) for r in served["results"]] == [
        (r.index, round(r.score, 5)) for r in expected
    ]


def test_score_answers_in_input_order(server, local_engine, pictures) -> None:
    body = {"text_1": QUERY, "text_2": [TEXTS[1], image_item(data_uri(pictures[0])), TEXTS[0]]}
    served = httpx.post(f"{server.url}/v1/score", json=body, timeout=60).json()
    expected = local_engine.score(
        [(QUERY, TEXTS[1]), (QUERY, Candidate(images=[png_bytes(pictures[0])])), (QUERY, TEXTS[0])]
    )
    assert [d["index"] for d in served["data"]] == [0, 1, 2]
    assert all(abs(d["score"] - e) <= 1e-5 for d, e in zip(served["data"], expected))
    assert served["object"] == "list" and served["data"][0]["object"] == "score"


def test_bad_document_is_a_422_naming_it_unless_skipped(server, local_engine) -> None:
    documents = [TEXTS[0], "   ", TEXTS[1]]  # an empty candidate: the engine refuses it
    raised = httpx.post(f"{server.url}/v1/rerank", json={"query": QUERY, "documents": documents}, timeout=60)
    assert raised.status_code == 422
    assert raised.json()["error"]["param"] == "documents[1]" and "documents[1]" in raised.json()["error"]["message"]
    skipped = httpx.post(
        f"{server.url}/v1/rerank", json={"query": QUERY, "documents": documents, "on_error": "skip"}, timeout=60
    ).json()
    assert [s["index"] for s in skipped["skipped"]] == [1] and skipped["skipped"][0]["error"]
    expected = local_engine.rerank(QUERY, [TEXTS[0], TEXTS[1]])
    assert [r["index"] for r in skipped["results"]] == [[0, 2][r.index] for r in expected]


def test_malformed_bodies_name_the_field(server) -> None:
    missing = httpx.post(f"{server.url}/v1/rerank", json={"query": QUERY}, timeout=10)
    assert missing.status_code == 422 and missing.json()["error"]["param"] == "documents"
    no_url = httpx.post(
        f"{server.url}/v1/rerank",
        json={"query": QUERY, "documents": [TEXTS[0], {"content": [{"type": "image_url", "image_url": {}}]}]},
        timeout=10,
    )
    assert no_url.status_code == 422
    assert no_url.json()["error"]["param"] == "documents[1].content[0].image_url.url"
    path = httpx.post(f"{server.url}/v1/rerank", json={"query": QUERY, "documents": [image_item("/etc/passwd")]})
    assert path.status_code == 422 and "documents[0].content[0].image_url.url" in path.json()["error"]["message"]
    wrong_model = httpx.post(f"{server.url}/v1/rerank", json={"model": "other", "query": QUERY, "documents": TEXTS})
    assert wrong_model.status_code == 404 and wrong_model.json()["error"]["param"] == "model"


def test_precache_reports_each_document(server, pictures) -> None:
    fresh = drawn_image(128, 64, 99)
    documents = [
        image_item(data_uri(fresh)),
        image_item("http://images.example.com/a.png"),
        image_item(data_uri(fresh)),
    ]
    first = httpx.post(f"{server.url}/v1/precache", json={"documents": documents}, timeout=60).json()
    assert [r["status"] for r in first["results"]] == ["stored", "failed", "present"]
    assert "not on the allowlist" in first["results"][1]["reason"] and first["results"][0]["bytes"] > 0
    assert (first["documents"], first["stored"], first["present"], first["failed"]) == (3, 1, 1, 1)
    again = httpx.post(f"{server.url}/v1/precache", json={"documents": documents[:1]}, timeout=60).json()
    assert again["results"][0]["status"] == "present"


def test_precache_converts_documents_off_the_event_loop(server, monkeypatch) -> None:
    # Converting decodes base64 and reads image headers: run on the event loop it would stall every other request.
    from minirerank_integrations.serve import handlers

    on_loop: list[bool] = []
    real_convert = handlers.convert

    def recording_convert(*args, **kwargs):
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:  # no running loop in this thread: a worker thread
            on_loop.append(False)
        return real_convert(*args, **kwargs)

    monkeypatch.setattr(handlers, "convert", recording_convert)
    documents = [image_item(data_uri(drawn_image(64, 64, 98))), TEXTS[0]]
    report = httpx.post(f"{server.url}/v1/precache", json={"documents": documents}, timeout=60)
    assert report.status_code == 200 and report.json()["documents"] == 2
    assert on_loop == [False, False]


def test_models_lists_the_served_model(server, serve_engine) -> None:
    listed = httpx.get(f"{server.url}/v1/models").json()
    assert [m["id"] for m in listed["data"]] == ["minirerank-demo"]
    assert listed["data"][0]["config"]["format"] == serve_engine.config.format


def test_health_is_ready_only_once_the_model_is_loaded(serve_engine) -> None:
    release = threading.Event()

    def load():
        assert release.wait(30)
        return serve_engine

    with BackgroundServer(create_app(load, ServeSettings())).start(wait_ready=False) as running:
        loading = httpx.get(f"{running.url}/health")
        assert loading.status_code == 503 and loading.json()["status"] == "loading"
        early = httpx.post(f"{running.url}/v1/rerank", json={"query": QUERY, "documents": TEXTS})
        assert early.status_code == 503 and early.headers["retry-after"]
        release.set()
        for _ in range(200):
            if httpx.get(f"{running.url}/health").status_code == 200:
                break
            threading.Event().wait(0.05)
        assert httpx.get(f"{running.url}/health").json()["status"] == "ok"
        assert httpx.post(f"{running.url}/v1/rerank", json={"query": QUERY, "documents": TEXTS}).status_code == 200


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


async def test_concurrent_requests_are_batched_and_counted(start_server, local_engine) -> None:
    running = start_server(batch_wait_ms=300)
    queries = [f"query number {i}" for i in range(6)]
    async with httpx.AsyncClient(base_url=running.url, timeout=60) as client:
        answers = await asyncio.gather(
            *(client.post("/v1/rerank", json={"query": q, "documents": TEXTS}) for q in queries)
        )
        metrics = (await client.get("/metrics")).text
    for query, answer in zip(queries, answers):
        expected = local_engine.rerank(query, TEXTS)
        assert [(r["index"], round(r["relevance_score"], 5)) for r in answer.json()["results"]] == [
            (r.index, round(r.score, 5)) for r in expected
        ]
    assert _metric(metrics, 'minirerank_requests_total{endpoint="rerank",status="200"}') == 6
    assert _metric(metrics, "minirerank_pairs_total") == 6 * len(TEXTS)
    batches = _metric(metrics, "minirerank_batch_size_count")
    assert 1 <= batches < 6, "requests arriving within the wait window share a batch"
    assert _metric(metrics, "minirerank_batch_size_sum") == 6
    assert 'minirerank_batch_size_bucket{le="1.0"}' in metrics and "minirerank_prefix_misses_total" in metrics
    assert _metric(metrics, "minirerank_queue_depth") == 0


def test_token_counts_remembered_equal_the_tokenizers(serve_engine) -> None:
    from minirerank_integrations.serve.service import Service

    service = Service(ServeSettings())
    service.engine = serve_engine
    tokenizer = serve_engine.backbone.tokenizer

    def counted(texts: list) -> list[int]:
        return [len(tokenizer(t, add_special_tokens=False)["input_ids"]) if t else 0 for t in texts]

    texts = [QUERY, None, TEXTS[0], QUERY, "", TEXTS[1]]
    assert service.count_tokens(texts) == counted(texts)  # counted
    assert service.count_tokens(texts) == counted(texts)  # from memory
    assert service.count_tokens([TEXTS[2], QUERY]) == counted([TEXTS[2], QUERY])  # one new, one known
