"""The native async path: concurrent calls on one model, without blocking the event loop."""

import asyncio

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import ImageNode, NodeWithScore, QueryBundle

from llama_index.postprocessor.minirerank import MiniRerank

QUERIES = ["a red circle", "a blue square", "green", "the capital of France"]


@pytest.mark.asyncio
async def test_concurrent_calls_match_sequential(engine, images, mixed_nodes, ranked) -> None:
    rerank = MiniRerank(model=engine, top_n=3)
    nodes = [NodeWithScore(node=node, score=0.5) for node in mixed_nodes]
    bundles = [QueryBundle(query_str=q) for q in QUERIES] * 3
    bundles += [QueryBundle(query_str="", image_path=images.path[c]) for c in ("red", "blue")]
    bundles += [QueryBundle(query_str="same, in green", image_path=images.path["yellow"])] * 2
    assert len(bundles) == 16

    sequential = [ranked(rerank.postprocess_nodes(nodes, bundle)) for bundle in bundles]
    concurrent = await asyncio.gather(*(rerank.apostprocess_nodes(nodes, bundle) for bundle in bundles))

    assert [ranked(result) for result in concurrent] == sequential


@pytest.mark.asyncio
async def test_concurrent_aquery_matches_query(engine, mixed_nodes, ranked) -> None:
    index = VectorStoreIndex(mixed_nodes, embed_model=MockEmbedding(embed_dim=8))
    query_engine = RetrieverQueryEngine.from_args(
        index.as_retriever(similarity_top_k=len(mixed_nodes)),
        llm=MockLLM(),
        node_postprocessors=[MiniRerank(model=engine, top_n=2)],
    )

    responses = await asyncio.gather(*(query_engine.aquery(q) for q in QUERIES))

    for query, response in zip(QUERIES, responses):
        assert ranked(response.source_nodes) == ranked(query_engine.query(query).source_nodes)
        assert len(response.source_nodes) == 2


@pytest.mark.asyncio
async def test_event_loop_keeps_running_while_scoring(fresh_engine, image_nodes, ranked) -> None:
    rerank = MiniRerank(model=fresh_engine, top_n=None)  # empty store: every prefix is computed
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.001)

    async def rerank_then_stop() -> list[NodeWithScore]:
        try:
            return await rerank.apostprocess_nodes(image_nodes, query_str="a yellow square")
        finally:
            done.set()

    result, _ = await asyncio.gather(rerank_then_stop(), ticker())

    assert fresh_engine.counters.prefix_computations == len(image_nodes)
    assert ticks >= 10, f"the event loop ran only {ticks} times while reranking"
    assert ranked(result) == ranked(rerank.postprocess_nodes(image_nodes, query_str="a yellow square"))


@pytest.mark.asyncio
async def test_async_with_fetcher_and_skip(engine, images, image_nodes, expect, ranked) -> None:
    nodes = [*image_nodes, NodeWithScore(node=ImageNode(id_="remote", image_url="https://images.example/r.png"))]
    rerank = MiniRerank(model=engine, top_n=None, image_fetcher=lambda url: images.png["red"])

    result = await rerank.apostprocess_nodes(nodes, query_str="red")

    local = [*image_nodes, NodeWithScore(node=ImageNode(id_="remote", image_path=images.path["red"]))]
    assert ranked(result) == expect(engine, "red", local, top_n=None)
