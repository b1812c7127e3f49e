"""A shared Redis prefix store by URL: two compressors, two engines, one set of prefixes."""

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis
from langchain_core.documents import Document

from langchain_minirerank import MiniRerankCompressor


@pytest.fixture
def redis_url(tmp_path: Path):
    """A real redis-server on 127.0.0.1 and a free port, stopped after the test."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed; `make test` installs it"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(tmp_path),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(host="127.0.0.1", port=port)
        for _ in range(300):
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_cache_url_shares_prefixes_between_compressors(tiny_path, png_base64, redis_url) -> None:
    docs = [Document(page_content=png_base64(seed)) for seed in (1, 2)] + [Document(page_content="a red square")]
    first = MiniRerankCompressor(model=tiny_path, config="paper", cache_url=redis_url, top_n=None)
    expected = first.compress_documents(docs, "a red circle")
    second = MiniRerankCompressor(model=tiny_path, config="paper", cache_url=redis_url, top_n=None)

    served = second.compress_documents(docs, "a red circle")

    assert (second.reranker.counters.prefix_hits, second.reranker.counters.prefix_computations) == (len(docs), 0)
    assert [d.metadata["relevance_score"] for d in served] == pytest.approx(
        [d.metadata["relevance_score"] for d in expected], abs=1e-6
    )
    assert second.reranker.store.back.url == redis_url


def test_cache_url_is_refused_with_a_shared_engine(engine) -> None:
    with pytest.raises(ValueError, match="cache_url"):
        MiniRerankCompressor(model=engine, cache_url="redis://127.0.0.1:6379/0")
