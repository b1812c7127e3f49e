"""``video_url`` content parts, as vLLM's /rerank takes them, against a real uvicorn server: scores equal the
in-process engine's on the same video bytes (every endpoint, the remote client), the image URLs' host rules apply,
and a bad video is a 422 naming its document."""

from __future__ import annotations

import base64
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from minirerank_integrations import Candidate, CandidateError, InputError, Query
from minirerank_integrations.serve.client import RemoteReranker
from minirerank_integrations.testing import moving_shape_frames, write_video

QUERY = "a red circle moving right"


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two four-frame 32x32 clips, told apart by colour."""
    folder = tmp_path_factory.mktemp("clips")
    return {colour: write_video(folder / f"{colour}.mp4", moving_shape_frames(colour)) for colour in ("red", "blue")}


def _video_uri(path: Path) -> str:
    return "data:video/mp4;base64," + base64.b64encode(path.read_bytes()).decode()


def _video_item(url: str, text: str | None = None) -> dict:
    parts: list[dict] = [{"type": "video_url", "video_url": {"url": url}}]
    if text is not None:
        parts.append({"type": "text", "text": text})
    return {"content": parts}


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


def test_video_parts_score_as_the_in_process_engine(server, local_engine, clips) -> None:
    documents = [_video_item(_video_uri(clips["red"])), _video_item(_video_uri(clips["blue"]), "a clip"), "a report"]
    local = [
        Candidate(videos=[clips["red"].read_bytes()]),
        Candidate(text="a clip", videos=[clips["blue"].read_bytes()]),
        "a report",
    ]
    expected = local_engine.rerank(QUERY, local)
    assert expected[0].score != expected[1].score  # the videos are scored, not dropped
    for route in ("/v1/rerank", "/v2/rerank"):
        served = httpx.post(f"{server.url}{route}", json={"query": QUERY, "documents": documents}, timeout=120)
        assert served.status_code == 200, served.text
        results = served.json()["results"]
        assert [r["index"] for r in results] == [r.index for r in expected]
        assert all(abs(got["relevance_score"] - want.score) <= 1e-5 for got, want in zip(results, expected))
    scored = httpx.post(f"{server.url}/v1/score", json={"text_1": QUERY, "text_2": documents}, timeout=120)
    assert scored.status_code == 200, scored.text
    by_index = {r.index: r.score for r in expected}
    assert [abs(d["score"] - by_index[d["index"]]) <= 1e-5 for d in scored.json()["data"]] == [True] * 3


def test_a_video_query(server, local_engine, clips) -> None:
    query = _video_item(_video_uri(clips["red"]))
    served = httpx.post(f"{server.url}/v1/rerank", json={"query": query, "documents": ["red", "blue"]}, timeout=120)
    assert served.status_code == 200, served.text
    expected = local_engine.rerank(Query(videos=[clips["red"].read_bytes()]), ["red", "blue"])
    assert [(r["index"], round(r["relevance_score"], 5)) for r in served.json()["results"]] == [
        (r.index, round(r.score, 5)) for r in expected
    ]


def test_a_bad_video_is_422_naming_its_document(server, clips) -> None:
    corrupt = "data:video/mp4;base64," + base64.b64encode(b"\x00\x00\x00\x18ftypmp42" + b"\x07" * 200).decode()
    documents = [_video_item(_video_uri(clips["red"])), "a report", _video_item(corrupt)]
    error = _error(
        httpx.post(f"{server.url}/v1/rerank", json={"query": QUERY, "documents": documents}, timeout=120), 422
    )
    assert error["param"] == "documents[2]" and "video" in error["message"]
    skipped = httpx.post(
        f"{server.url}/v1/rerank", json={"query": QUERY, "documents": documents, "on_error": "skip"}, timeout=120
    ).json()
    assert [s["index"] for s in skipped["skipped"]] == [2] and sorted(r["index"] for r in skipped["results"]) == [0, 1]


def test_a_data_uri_that_is_not_base64_or_empty_is_422(server) -> None:
    for url, why in [
        ("data:video/mp4,rawbytes", "must be base64 ('data:video/mp4;base64,...')"),
        ("data:video/mp4;base64,@@@", "base64 is invalid"),
        ("data:video/mp4;base64,", "holds no video"),
    ]:
        body = {"query": QUERY, "documents": ["a report", _video_item(url)]}
        error = _error(httpx.post(f"{server.url}/v1/rerank", json=body, timeout=60), 422)
        assert error["param"] == "documents[1].content[0].video_url.url" and why in error["message"]


def test_video_urls_follow_the_image_url_rules(start_server) -> None:
    running = start_server(allowed_image_hosts=("videos.example.com",))
    for url, why in [
        ("https://elsewhere.example.org/clip.mp4", "'elsewhere.example.org' is not on the allowlist"),
        ("file:///etc/passwd", "scheme 'file'"),
    ]:
        body = {"query": QUERY, "documents": ["a report", _video_item(url)]}
        error = _error(httpx.post(f"{running.url}/v1/rerank", json=body, timeout=60), 422)
        assert error["param"] == "documents[1].content[0].video_url.url" and why in error["message"]
    query = {"query": _video_item("https://elsewhere.example.org/clip.mp4"), "documents": ["a report"]}
    assert _error(httpx.post(f"{running.url}/v1/rerank", json=query), 422)["param"] == "query.content[0].video_url.url"


@pytest.fixture
def video_host(clips) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 (a loopback address) serving the red clip at /red.mp4, 404 elsewhere."""
    body = clips["red"].read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            found = self.path == "/red.mp4"
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(body) if found else 0))
            self.end_headers()
            if found:
                self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    host = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=host.serve_forever, daemon=True)
    thread.start()
    yield f"http://localhost:{host.server_address[1]}"
    host.shutdown()
    host.server_close()


def test_a_video_url_is_fetched_only_from_an_allowed_public_or_permitted_host(
    start_server, video_host, local_engine, clips
) -> None:
    body = {"query": QUERY, "documents": ["a report", _video_item(f"{video_host}/red.mp4")]}
    guarded = start_server(allowed_image_hosts=("localhost",))
    error = _error(httpx.post(f"{guarded.url}/v1/rerank", json=body, timeout=60), 422)
    assert error["param"] == "documents[1].content[0].video_url.url"
    assert "non-global address (loopback)" in error["message"]
    guarded.stop()

    opened = start_server(allowed_image_hosts=("localhost",), allow_private_addresses=True)
    missing = {"query": QUERY, "documents": ["a report", _video_item(f"{video_host}/absent.mp4")]}
    error = _error(httpx.post(f"{opened.url}/v1/rerank", json=missing, timeout=60), 422)
    assert error["param"] == "documents[1].content[0].video_url.url" and "HTTP 404" in error["message"]
    served = httpx.post(f"{opened.url}/v1/rerank", json=body, timeout=120)
    assert served.status_code == 200, served.text
    expected = local_engine.rerank(QUERY, ["a report", Candidate(videos=[clips["red"].read_bytes()])])
    assert [(r["index"], round(r["relevance_score"], 5)) for r in served.json()["results"]] == [
        (r.index, round(r.score, 5)) for r in expected
    ]


def test_the_remote_client_sends_videos(server, local_engine, clips) -> None:
    remote = RemoteReranker(server.url)
    red, blue = clips["red"], clips["blue"]
    candidates = [
        Candidate(videos=[red], id="path"),
        Candidate(text="a clip", videos=[blue.read_bytes()], id="bytes"),
        Candidate(videos=[red.as_uri()], id="file-uri"),
        Candidate(text="a red circle", images=[], id="text"),
    ]
    query = Query(text=QUERY, videos=[str(blue)])
    got = remote.rerank(query, candidates)
    want = local_engine.rerank(Query(text=QUERY, videos=[blue.read_bytes()]), candidates)
    assert [(r.index, r.id) for r in got] == [(r.index, r.id) for r in want]
    assert all(abs(g.score - w.score) <= 1e-5 for g, w in zip(got, want))
    remote.close()


def test_the_remote_client_refuses_what_it_cannot_send(server, clips, tmp_path) -> None:
    remote = RemoteReranker(server.url)
    frames = Candidate(videos=[[clips["red"].read_bytes()]], id="frames")
    with pytest.raises(CandidateError, match=r"candidate 1 \(id 'frames'\): video 0 is a list of 1 frames"):
        remote.rerank(QUERY, ["a report", frames])
    with pytest.raises(CandidateError, match=r"candidate 0: video 0 '.*absent\.mp4': no such file"):
        remote.rerank(QUERY, [Candidate(videos=[tmp_path / "absent.mp4"])])
    with pytest.raises(InputError, match=r"the query: video 0 'nowhere\.mp4': no such file"):
        remote.rerank(Query(videos=["nowhere.mp4"]), ["a report"])
    remote.close()


def test_precache_stores_a_video_document(server, tmp_path) -> None:
    clip = write_video(tmp_path / "green.mp4", moving_shape_frames("green", step=6))  # a clip no other test sends
    corrupt = "data:video/mp4;base64," + base64.b64encode(b"\x00\x00\x00\x18ftypmp42" + b"\x07" * 200).decode()
    documents = [
        _video_item(_video_uri(clip)),
        _video_item("https://elsewhere.example.org/a.mp4"),
        _video_item(corrupt),
    ]
    first = httpx.post(f"{server.url}/v1/precache", json={"documents": documents}, timeout=120).json()
    assert [r["status"] for r in first["results"]] == ["stored", "failed", "failed"], first
    assert first["results"][0]["bytes"] > 0 and "not on the allowlist" in first["results"][1]["reason"]
    assert "video" in first["results"][2]["reason"]
    again = httpx.post(f"{server.url}/v1/precache", json={"documents": documents[:1]}, timeout=120).json()
    assert again["results"][0]["status"] == "present"


def test_videos_per_item_are_capped(start_server) -> None:
    running = start_server(max_images_per_item=2)
    tiny = "data:video/mp4;base64," + base64.b64encode(b"not decoded: refused first").decode()
    parts = [{"type": "video_url", "video_url": {"url": tiny}}] * 3
    error = _error(
        httpx.post(f"{running.url}/v1/rerank", json={"query": QUERY, "documents": [{"content": parts}]}), 422
    )
    assert error["param"] == "documents[0]" and "more than 2 videos (--max-images-per-item)" in error["message"]
