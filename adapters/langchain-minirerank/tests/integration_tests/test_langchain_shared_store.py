"""A shared Redis prefix store by URL: two compressors, two engines, one set of prefixes."""

from pathlib import Path

import pytest
from langchain_core.documents import Document
from minirerank_integrations.testing import RedisServer

from langchain_minirerank import MiniRerankCompressor


@pytest.fixture
def redis_url(tmp_path: Path):
    """A real redis-server on 127.0.0.1 and a free port, stopped after the test."""
    with RedisServer(tmp_path / "redis") as server:
        yield server.url


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
