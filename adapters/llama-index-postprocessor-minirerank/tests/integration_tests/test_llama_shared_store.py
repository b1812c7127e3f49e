"""A shared Redis prefix store by URL: ingestion in one engine, hits in another, the setting serialized."""

from pathlib import Path

import pytest
from llama_index.core.schema import NodeWithScore, QueryBundle
from minirerank_integrations.testing import RedisServer

from llama_index.postprocessor.minirerank import MiniRerank, MiniRerankPrecache


@pytest.fixture
def redis_url(tmp_path: Path):
    """A real redis-server on 127.0.0.1 and a free port, stopped after the test."""
    with RedisServer(tmp_path / "redis") as server:
        yield server.url


def test_cache_url_shares_prefixes_between_engines(tiny_path, mixed_nodes, redis_url) -> None:
    ingest = MiniRerankPrecache(model=str(tiny_path), config="paper", cache_url=redis_url, device="cpu")
    ingest(mixed_nodes)
    rerank = MiniRerank(model=str(tiny_path), config="paper", cache_url=redis_url, device="cpu", top_n=2)
    assert rerank.engine is not ingest.engine

    rerank.postprocess_nodes([NodeWithScore(node=n) for n in mixed_nodes], QueryBundle("a red circle"))

    assert rerank.engine.counters.prefix_hits == len(mixed_nodes)
    assert rerank.engine.counters.prefix_computations == 0
    assert rerank.to_dict()["cache_url"] == redis_url
    restored = MiniRerank.from_dict(rerank.to_dict())
    assert restored.engine.store.back.url == redis_url


def test_cache_url_is_refused_with_a_shared_engine(engine) -> None:
    with pytest.raises(ValueError, match="cache_url applies only when the model is loaded by name"):
        MiniRerank(model=engine, cache_url="redis://127.0.0.1:6379/0")
