"""The prefix store as one setting: ``store`` (a StoreConfig or a dict) reaches the engine as given, int8
included; a bad value is refused, naming it, before any model loads."""

import math
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from minirerank_integrations import StoreConfig

from langchain_minirerank import MiniRerankCompressor


def test_an_int8_directory_store_is_shared_by_two_compressors(tiny_path: Path, png_base64, tmp_path: Path) -> None:
    docs = [Document(page_content=png_base64(seed)) for seed in (1, 2)] + [Document(page_content="a red square")]
    store = {"dir": str(tmp_path / "prefixes"), "storage": "int8", "memory_limit": 0}
    first = MiniRerankCompressor(model=tiny_path, config="paper", store=store, top_n=None)
    assert first.store == StoreConfig(**store)
    assert first.reranker.store.storage == "int8" and first.reranker.store.directory == store["dir"]
    scores = [d.metadata["relevance_score"] for d in first.compress_documents(docs, "a red square")]
    second = MiniRerankCompressor(model=tiny_path, config="paper", store=StoreConfig(**store), top_n=None)
    again = [d.metadata["relevance_score"] for d in second.compress_documents(docs, "a red square")]
    assert second.reranker.counters.prefix_hits == len(docs) and second.reranker.counters.prefix_computations == 0
    # The first call scored the prefixes it computed, the second their int8 copies: close, within int8's bound.
    assert again == pytest.approx(scores, abs=1e-2)
    third = MiniRerankCompressor(model=tiny_path, config="paper", store=store, top_n=None)
    assert [d.metadata["relevance_score"] for d in third.compress_documents(docs, "a red square")] == pytest.approx(
        again, abs=1e-6
    )


def test_the_shorthands_fold_into_store(tiny_path: Path, tmp_path: Path) -> None:
    compressor = MiniRerankCompressor(model=tiny_path, cache_dir=tmp_path / "a", store={"storage": "float16"})
    assert compressor.reranker.store.back.storage == "float16"
    assert compressor.reranker.store.back.directory == str(tmp_path / "a")


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"store": {"memory_limit": "abc"}}, "memory_limit"),
        ({"store": {"url": "redis://127.0.0.1:6379/0", "ttl": math.inf}}, "ttl"),
        ({"store": {"storage": "int4"}}, "storage"),
        ({"cache_url": "redis://127.0.0.1:99999/0"}, "cache_url"),
        ({"cache_url": "redis://127.0.0.1:6379/0", "store": {"dir": "x"}}, "exclusive"),
    ],
)
def test_bad_store_settings_are_refused_before_the_model_loads(
    tmp_path: Path, settings: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValueError, match=named) as raised:
        MiniRerankCompressor(model=tmp_path / "no-checkpoint", **settings)  # never read: the store is checked first
    assert "no-checkpoint" not in str(raised.value)


def test_store_is_refused_with_a_shared_engine(engine) -> None:
    with pytest.raises(ValueError, match="store only apply"):
        MiniRerankCompressor(model=engine, store={"storage": "int8"})
