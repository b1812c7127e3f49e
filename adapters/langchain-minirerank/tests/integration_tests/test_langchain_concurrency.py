"""Many concurrent async calls on one model: same results as one at a time, and a free event loop."""

from __future__ import annotations

import asyncio

from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.vectorstores import InMemoryVectorStore
from minirerank_integrations import MiniReranker

from langchain_minirerank import MiniRerankCompressor


def scored(documents: list[Document]) -> list[tuple[str, float]]:
    return [(document.id, document.metadata["relevance_score"]) for document in documents]


async def test_sixteen_concurrent_ainvoke_equal_sequential(engine: MiniReranker, documents, png_base64) -> None:
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=8))
    store.add_documents(documents)
    retriever = ContextualCompressionRetriever(
        base_compressor=MiniRerankCompressor(model=engine, top_n=4),
        base_retriever=store.as_retriever(search_kwargs={"k": 5}),
    )
    words = ["red", "blue", "green", "circle", "square", "report", "Paris", "page"]
    queries = [f"a {word} thing number {i}" for i, word in enumerate(words * 3)][:12]
    queries += [png_base64(30 + i) for i in range(2)] + [
        f"data:image/png;base64,{png_base64(40 + i)}" for i in range(2)
    ]
    assert len(queries) == 16

    sequential = [scored(retriever.invoke(query)) for query in queries]
    concurrent = await asyncio.gather(*(retriever.ainvoke(query) for query in queries))
    assert [scored(result) for result in concurrent] == sequential
    assert len({tuple(result) for result in sequential}) > 1  # the queries really differ


async def test_acompress_does_not_block_the_event_loop(engine: MiniReranker, documents) -> None:
    compressor = MiniRerankCompressor(model=engine, top_n=None)
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    # A query the engine has not seen, so the call does real work while the ticker runs.
    result = await compressor.acompress_documents(documents, "an unseen query about green triangles at the top")
    done.set()
    await task
    assert len(result) == len(documents)
    assert ticks > 10
