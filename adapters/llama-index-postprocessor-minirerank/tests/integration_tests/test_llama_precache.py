"""MiniRerankPrecache in an IngestionPipeline: prefixes computed at ingestion are reused at query time."""

import copy
import logging

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import ImageNode, MetadataMode, TextNode
from minirerank_integrations import CandidateError

from llama_index.postprocessor.minirerank import MiniRerank, MiniRerankPrecache

QUERIES = ["a red circle", "the capital of France", "green"]


def _query_engine(nodes, rerank):
    index = VectorStoreIndex(nodes, embed_model=MockEmbedding(embed_dim=8))
    return RetrieverQueryEngine.from_args(
        index.as_retriever(similarity_top_k=len(nodes)), llm=MockLLM(), node_postprocessors=[rerank]
    )


def test_every_document_prefix_is_a_hit_at_query_time(fresh_engine, mixed_nodes) -> None:
    rerank = MiniRerank(model=fresh_engine, top_n=2)
    pipeline = IngestionPipeline(transformations=[MiniRerankPrecache(rerank)])

    ingested = pipeline.run(nodes=mixed_nodes)

    assert fresh_engine.counters.prefix_computations == len(mixed_nodes)
    query_engine = _query_engine(ingested, rerank)
    fresh_engine.counters.reset()
    hits_before = fresh_engine.store.stats.hits

    for query in QUERIES:
        assert len(query_engine.query(query).source_nodes) == 2

    assert fresh_engine.counters.prefix_computations == 0
    assert fresh_engine.counters.prefix_hits == len(QUERIES) * len(mixed_nodes)
    assert fresh_engine.store.stats.hits - hits_before == len(QUERIES) * len(mixed_nodes)


def test_without_precache_prefixes_are_computed(fresh_engine, mixed_nodes) -> None:
    """The control for the test above: the same queries on an empty store compute every prefix once."""
    query_engine = _query_engine(mixed_nodes, MiniRerank(model=fresh_engine, top_n=2))

    query_engine.query(QUERIES[0])

    assert fresh_engine.counters.prefix_computations == len(mixed_nodes)


def test_metadata_mode_is_taken_from_the_postprocessor(fresh_engine, mixed_nodes) -> None:
    """Text rendered differently at ingestion is a different prefix, so the step converts nodes as the
    postprocessor it is given does; overriding metadata_mode makes the text nodes with metadata miss."""
    rerank = MiniRerank(model=fresh_engine, top_n=2, metadata_mode=MetadataMode.NONE)
    inherited = MiniRerankPrecache(rerank)
    assert inherited.metadata_mode == MetadataMode.NONE
    inherited(mixed_nodes)
    fresh_engine.counters.reset()
    _query_engine(mixed_nodes, rerank).query(QUERIES[0])
    assert fresh_engine.counters.prefix_computations == 0

    other = MiniRerank(model=fresh_engine, top_n=2)  # EMBED, the default
    MiniRerankPrecache(other, metadata_mode=MetadataMode.NONE)(mixed_nodes)
    fresh_engine.counters.reset()
    _query_engine(mixed_nodes, other).query(QUERIES[0])

    with_metadata = [n for n in mixed_nodes if n.get_content(MetadataMode.NONE) and n.metadata]
    assert with_metadata
    assert fresh_engine.counters.prefix_computations == len(with_metadata)


def test_nodes_pass_through_unchanged(fresh_engine, mixed_nodes) -> None:
    snapshot = copy.deepcopy([n.model_dump() for n in mixed_nodes])
    step = MiniRerankPrecache(fresh_engine)

    out = step(mixed_nodes)

    assert out is mixed_nodes
    assert [n.model_dump() for n in mixed_nodes] == snapshot
    assert fresh_engine.counters.prefix_computations == len(mixed_nodes)


def test_shares_the_engine(engine, tiny_path) -> None:
    rerank = MiniRerank(model=engine)
    assert MiniRerankPrecache(rerank).engine is engine
    assert MiniRerankPrecache(rerank.engine).engine is engine
    assert MiniRerankPrecache(engine).engine is engine
    assert MiniRerankPrecache(str(tiny_path)).engine is not engine


def test_fetcher_is_inherited_from_the_postprocessor(fresh_engine, images) -> None:
    fetch = lambda url: images.png["red"]  # noqa: E731
    step = MiniRerankPrecache(MiniRerank(model=fresh_engine, image_fetcher=fetch))
    assert step.image_fetcher is fetch

    step([ImageNode(id_="remote", image_url="https://images.example/red.png")])

    assert fresh_engine.counters.prefix_computations == 1


def test_bad_node_raises_or_is_skipped(fresh_engine, mixed_nodes, caplog) -> None:
    bad = TextNode(id_="empty", text="")
    nodes = [*mixed_nodes[:2], bad, *mixed_nodes[2:]]

    with pytest.raises(CandidateError) as caught:
        MiniRerankPrecache(fresh_engine)(nodes)
    assert (caught.value.index, caught.value.candidate_id) == (2, "empty")

    fresh_engine.counters.reset()
    with caplog.at_level(logging.WARNING, logger="llama_index.postprocessor.minirerank"):
        out = MiniRerankPrecache(fresh_engine, on_error="skip")(nodes)
    assert out is nodes
    assert any("empty" in record.getMessage() for record in caplog.records)
    # The two nodes before the bad one were cached by the failed run; the rest are computed now.
    assert fresh_engine.counters.prefix_computations == len(mixed_nodes) - 2


@pytest.mark.asyncio
async def test_async_pipeline(fresh_engine, mixed_nodes) -> None:
    rerank = MiniRerank(model=fresh_engine, top_n=3)
    ingested = await IngestionPipeline(transformations=[MiniRerankPrecache(rerank)]).arun(nodes=mixed_nodes)
    fresh_engine.counters.reset()

    await _query_engine(ingested, rerank).aquery("a red circle")

    assert fresh_engine.counters.prefix_computations == 0
    assert fresh_engine.counters.prefix_hits == len(mixed_nodes)


def test_dense_engine_has_nothing_to_precache(tiny_path, mixed_nodes) -> None:
    step = MiniRerankPrecache(str(tiny_path), config="dense")
    with pytest.raises(ValueError, match="vision_first"):
        step(mixed_nodes)
