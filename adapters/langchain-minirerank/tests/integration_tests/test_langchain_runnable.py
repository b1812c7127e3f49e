"""as_runnable() in LCEL: the query beside the retrieved documents, sync and async."""

from __future__ import annotations

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.runnables import RunnablePassthrough
from langchain_core.tracers.context import collect_runs
from langchain_core.vectorstores import InMemoryVectorStore
from minirerank_integrations import MiniReranker

from langchain_minirerank import MiniRerankCompressor


@pytest.fixture
def base_retriever(documents: list[Document]):
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=8))
    store.add_documents(documents)
    return store.as_retriever(search_kwargs={"k": 5})


async def test_chain_matches_compress_documents(engine: MiniReranker, base_retriever) -> None:
    compressor = MiniRerankCompressor(model=engine, top_n=2)
    chain = {"query": RunnablePassthrough(), "documents": base_retriever} | compressor.as_runnable()
    query = "a blue square"
    want = compressor.compress_documents(base_retriever.invoke(query), query)
    assert len(want) == 2
    assert chain.invoke(query) == want
    assert await chain.ainvoke(query) == want
    assert chain.batch([query, "Paris"]) == [
        want,
        compressor.compress_documents(base_retriever.invoke("Paris"), "Paris"),
    ]


def test_direct_input_and_schema(engine: MiniReranker, documents: list[Document]) -> None:
    compressor = MiniRerankCompressor(model=engine, top_n=None)
    runnable = compressor.as_runnable()
    assert runnable.invoke({"query": "a red circle", "documents": documents}) == compressor.compress_documents(
        documents, "a red circle"
    )
    assert runnable.invoke({"query": "a red circle", "documents": []}) == []
    schema = runnable.get_input_jsonschema()
    assert schema["$ref"] == "#/$defs/RerankInput"
    assert set(schema["$defs"]["RerankInput"]["required"]) == {"query", "documents"}


def test_run_is_traced_under_the_compressor_name(engine: MiniReranker, documents: list[Document]) -> None:
    with collect_runs() as collected:
        MiniRerankCompressor(model=engine).as_runnable().invoke({"query": "a red circle", "documents": documents})
    assert [run.name for run in collected.traced_runs] == ["MiniRerankCompressor"]


def test_wrong_input_is_a_clear_error(engine: MiniReranker, documents: list[Document]) -> None:
    runnable = MiniRerankCompressor(model=engine).as_runnable()
    with pytest.raises(TypeError, match="expects \\{'query': str, 'documents'"):
        runnable.invoke(documents)
    with pytest.raises(TypeError, match="RunnablePassthrough"):
        runnable.invoke({"question": "x", "documents": documents})
