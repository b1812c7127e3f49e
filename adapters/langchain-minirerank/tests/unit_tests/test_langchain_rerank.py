"""The classes themselves: LangChain base classes, defaults, and the options a shared engine refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.documents import BaseDocumentCompressor
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import InMemoryVectorStore
from minirerank_integrations import MiniReranker, RerankConfig
from pydantic import ValidationError

from langchain_minirerank import MiniRerankCompressor, MiniRerankRetriever


def test_compressor_is_a_document_compressor() -> None:
    assert BaseDocumentCompressor in MiniRerankCompressor.__mro__


def test_retriever_is_a_retriever() -> None:
    assert BaseRetriever in MiniRerankRetriever.__mro__


def test_shared_engine_and_defaults(engine: MiniReranker) -> None:
    compressor = MiniRerankCompressor(model=engine)
    assert compressor.reranker is engine
    assert compressor.top_n == 5
    assert compressor.on_error == "raise"
    assert compressor.image_path_keys == ("image_path",)
    assert compressor.image_base64_keys == ("image_base64",)
    assert compressor.mime_type_key == "mime_type"


@pytest.mark.parametrize(
    "option", [{"config": "dense"}, {"cache_dir": "x"}, {"device": "cpu"}, {"dtype": "float32"}, {"batch_size": 2}]
)
def test_shared_engine_refuses_load_options(engine: MiniReranker, option: dict) -> None:
    with pytest.raises(ValidationError, match="MiniReranker.from_pretrained"):
        MiniRerankCompressor(model=engine, **option)


def test_shared_engine_refuses_a_different_fetcher(engine: MiniReranker) -> None:
    with pytest.raises(ValidationError, match="image_fetcher"):
        MiniRerankCompressor(model=engine, image_fetcher=lambda url: b"")


def test_bad_field_values_are_refused(engine: MiniReranker) -> None:
    for bad in ({"top_n": 0}, {"on_error": "ignore"}, {"score_threshold": 2.0}, {"unknown": 1}):
        with pytest.raises(ValidationError):
            MiniRerankCompressor(model=engine, **bad)


def test_loads_a_checkpoint_with_options_passed_through(tiny_path: Path, tmp_path: Path) -> None:
    config = RerankConfig(format="query_first")
    compressor = MiniRerankCompressor(model=tiny_path, config=config, batch_size=2, cache_dir=tmp_path / "store")
    engine = compressor.reranker
    assert isinstance(engine, MiniReranker)
    assert engine.config == config.resolve(engine.num_layers).model_copy(update={"batch_size": 2})
    assert (tmp_path / "store").is_dir()
    assert MiniRerankCompressor(model=str(tiny_path)).reranker.config == RerankConfig.preset("paper", 4)


def test_retriever_k_must_be_positive(engine: MiniReranker) -> None:
    base = InMemoryVectorStore(DeterministicFakeEmbedding(size=8)).as_retriever()
    compressor = MiniRerankCompressor(model=engine)
    assert MiniRerankRetriever(base_retriever=base, compressor=compressor, k=2).k == 2
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        MiniRerankRetriever(base_retriever=base, compressor=compressor, k=0)
