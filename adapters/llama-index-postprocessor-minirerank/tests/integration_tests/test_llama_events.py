"""Instrumentation events and legacy callback payloads, observed with real handlers."""

from typing import Any

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload, LlamaDebugHandler
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import QueryBundle

from llama_index.postprocessor.minirerank import MiniRerank


class RerankEvents(BaseEventHandler):
    events: list[BaseEvent] = []

    @classmethod
    def class_name(cls) -> str:
        return "RerankEvents"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, (ReRankStartEvent, ReRankEndEvent)):
            self.events.append(event)


@pytest.fixture
def rerank_events():
    handler = RerankEvents(events=[])
    root = get_dispatcher()
    root.add_event_handler(handler)
    try:
        yield handler.events
    finally:
        root.event_handlers.remove(handler)


def _ids(nodes) -> list[str]:
    return [n.node.node_id for n in nodes]


def test_rerank_events(engine, tiny_path, image_nodes, rerank_events, ranked) -> None:
    rerank = MiniRerank(model=engine, top_n=2)
    bundle = QueryBundle(query_str="a red circle")

    result = rerank.postprocess_nodes(image_nodes, bundle)

    start, end = rerank_events
    assert isinstance(start, ReRankStartEvent) and isinstance(end, ReRankEndEvent)
    assert start.query == bundle
    assert _ids(start.nodes) == _ids(image_nodes)
    assert (start.top_n, start.model_name) == (2, str(tiny_path))
    assert ranked(end.nodes) == ranked(result)
    assert start.span_id is not None and start.span_id == end.span_id


@pytest.mark.asyncio
async def test_rerank_events_async(engine, image_nodes, rerank_events, ranked) -> None:
    result = await MiniRerank(model=engine, top_n=None).apostprocess_nodes(image_nodes, query_str="blue")

    start, end = rerank_events
    assert isinstance(start, ReRankStartEvent) and isinstance(end, ReRankEndEvent)
    assert start.top_n == len(image_nodes)
    assert start.query.query_str == "blue"
    assert ranked(end.nodes) == ranked(result)
    assert start.span_id is not None and start.span_id == end.span_id


def test_reranking_callback_payloads(engine, tiny_path, image_nodes, ranked) -> None:
    debug = LlamaDebugHandler()
    rerank = MiniRerank(model=engine, top_n=3, callback_manager=CallbackManager([debug]))

    result = rerank.postprocess_nodes(image_nodes, query_str="green")

    [(start, end)] = debug.get_event_pairs(CBEventType.RERANKING)
    assert _ids(start.payload[EventPayload.NODES]) == _ids(image_nodes)
    assert start.payload[EventPayload.MODEL_NAME] == str(tiny_path)
    assert start.payload[EventPayload.QUERY_STR] == "green"
    assert start.payload[EventPayload.TOP_K] == 3
    assert ranked(end.payload[EventPayload.NODES]) == ranked(result)


@pytest.mark.asyncio
async def test_callbacks_through_a_query_engine(engine, mixed_nodes, ranked) -> None:
    debug = LlamaDebugHandler()
    index = VectorStoreIndex(mixed_nodes, embed_model=MockEmbedding(embed_dim=8))
    query_engine = RetrieverQueryEngine.from_args(
        index.as_retriever(similarity_top_k=len(mixed_nodes)),
        llm=MockLLM(),
        node_postprocessors=[MiniRerank(model=engine, top_n=2)],
        callback_manager=CallbackManager([debug]),
    )

    response = await query_engine.aquery("the capital of France")

    [(start, end)] = debug.get_event_pairs(CBEventType.RERANKING)
    assert start.payload[EventPayload.QUERY_STR] == "the capital of France"
    assert len(start.payload[EventPayload.NODES]) == len(mixed_nodes)
    assert ranked(end.payload[EventPayload.NODES]) == ranked(response.source_nodes)
