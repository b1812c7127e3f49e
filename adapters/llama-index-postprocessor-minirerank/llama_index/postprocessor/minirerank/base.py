"""``MiniRerank``: a LlamaIndex node postprocessor that reranks text and image nodes with minirerank."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
from minirerank_integrations import (
    Candidate,
    CandidateError,
    MiniReranker,
    MiniRerankError,
    OnError,
    Query,
    RerankConfig,
    RerankResults,
    StoreConfig,
    copied_metadata,
)

from ._convert import ImageFetcher, node_to_candidate, query_to_engine
from ._engine import (
    DEFAULT_MODEL,
    STORE_DESCRIPTION,
    ModelLike,
    PresetName,
    StoreLike,
    rebuild_problem,
    refuse_unrebuildable,
    resolve_engine,
)
from ._remote import remote_engine

if TYPE_CHECKING:  # remote mode's client; httpx is imported only when it is used
    from minirerank_integrations.serve.client import RemoteReranker

logger = logging.getLogger(__name__)
dispatcher = get_dispatcher(__name__)


@dataclass
class _EngineCall:
    """One rerank call's engine inputs; ``positions[i]`` is the input position of ``candidates[i]``."""

    query: Query
    candidates: list[Candidate]
    positions: list[int]


class MiniRerank(BaseNodePostprocessor):
    """Rerank retrieved nodes (text, images, videos, or a mix) against a text and/or image query with a
    Qwen3-VL reranker through minirerank's fast path.

    Each node is scored as follows: its image is the first of ``ImageNode.image`` (base64),
    ``image_path``, ``image_url`` (only with an ``image_fetcher``), ``Node.image_resource``
    (``data``, ``path``, ``url``) and ``metadata["file_path"]`` when that names an image file; its video
    is the first of ``Node.video_resource`` (``data``, ``path``, ``url``, fetched through ``image_fetcher``)
    and ``metadata["file_path"]`` when that names a video file (``file_type`` ``video/*`` or a video
    extension; decoding a video file needs the core's ``video`` extra, PyAV); its text
    is ``get_content(metadata_mode=...)`` when the node has text of its own, so an image or video node with
    empty text is scored on its image or video alone. The score is the engine's P(relevant).

    Pass an existing :class:`~minirerank_integrations.MiniReranker` as ``model`` to share one loaded model
    between components (several postprocessors, :class:`MiniRerankPrecache`).

    Examples:
        ``MiniRerank(model="Qwen/Qwen3-VL-Reranker-2B", top_n=3, config="paper")``
    """

    model: str = Field(description="Name or path of the Qwen3-VL reranker checkpoint the engine was loaded from.")
    top_n: int | None = Field(default=5, ge=0, description="Nodes returned, best first (None: all of them, reordered).")
    config: RerankConfig | PresetName | None = Field(
        default=None,
        description="Engine configuration or preset name ('paper', 'dense'); None: when loading, the configuration "
        "saved with the checkpoint, else 'paper'; the "
        "engine's own when sharing one.",
    )
    cache_dir: str | None = Field(
        default=None,
        description="Directory of the engine's persistent prefix store (store.dir; None: in memory). Loading only.",
    )
    cache_url: str | None = Field(
        default=None,
        description="A Redis or Valkey server shared by replicas (redis://host:6379/0, rediss://; password in the "
        "URL or $MINIRERANK_REDIS_PASSWORD), instead of cache_dir. Loading only.",
    )
    store: StoreConfig | None = Field(default=None, description=STORE_DESCRIPTION)
    device: str | None = Field(
        default=None, description="Torch device of the model (None: cuda, mps or cpu, whichever is present)."
    )
    dtype: str | None = Field(default=None, description="Weights dtype: float32, bfloat16 or float16.")
    batch_size: int | None = Field(
        default=None, gt=0, description="Pairs per forward pass, set in the engine's config (None: the config's)."
    )
    keep_retrieval_score: bool = Field(
        default=False, description="Keep each node's previous score in the returned copy's metadata['retrieval_score']."
    )
    metadata_mode: MetadataMode = Field(
        default=MetadataMode.EMBED,
        description="How a node's text is rendered for scoring; EMBED, as the node was embedded for retrieval.",
    )
    on_error: OnError = Field(
        default="raise",
        description="A node that cannot be scored (no text nor image, unreadable image): 'raise' a "
        "CandidateError naming it, or 'skip' it (left out of the results and logged).",
    )
    image_fetcher: ImageFetcher | None = Field(
        default=None,
        exclude=True,
        description="Called with an http(s) image URL, returns its bytes; without it image URLs are not fetched.",
    )
    base_url: str | None = Field(
        default=None,
        description="A `minirerank serve` server (e.g. http://127.0.0.1:8000) that scores instead of a local model; "
        "`model` is then the served model id. Image and video URLs go to the server as URLs, local images and "
        "videos as data URIs.",
    )
    api_key: str | None = Field(default=None, exclude=True, description="Bearer key of the server (remote mode).")

    _engine: MiniReranker | RemoteReranker = PrivateAttr()  # RemoteReranker in remote mode (base_url)
    _rebuild_problem: str | None = PrivateAttr(default=None)  # why to_dict would not describe the shared engine

    def __init__(
        self,
        model: ModelLike = DEFAULT_MODEL,
        top_n: int | None = 5,
        config: RerankConfig | PresetName | None = None,
        cache_dir: str | os.PathLike | None = None,
        cache_url: str | None = None,
        store: StoreLike | None = None,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int | None = None,
        keep_retrieval_score: bool = False,
        metadata_mode: MetadataMode = MetadataMode.EMBED,
        on_error: OnError = "raise",
        image_fetcher: ImageFetcher | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(config, dict):  # from_dict / from_json hand the config back as a plain dict
            config = RerankConfig.model_validate(config)
        engine: MiniReranker | RemoteReranker
        problem: str | None = None  # why to_dict would not describe a shared engine
        if base_url is not None:  # remote mode: a server scores (_remote.py)
            engine, fields = remote_engine(
                base_url,
                api_key,
                str(model),
                config=config,
                batch_size=batch_size,
                device=device,
                dtype=dtype,
                cache_dir=cache_dir,
                cache_url=cache_url,
                store=store,
            )
            kwargs["api_key"] = api_key
        else:
            engine, fields = resolve_engine(
                model,
                config=config,
                batch_size=batch_size,
                device=device,
                dtype=dtype,
                cache_dir=cache_dir,
                cache_url=cache_url,
                store=store,
            )
            problem = rebuild_problem(engine) if isinstance(model, MiniReranker) else None
        # One dict: the checker reads the base class's own fields as __init__'s keywords, not this class's.
        settings: dict[str, Any] = {
            "top_n": top_n,
            "keep_retrieval_score": keep_retrieval_score,
            "metadata_mode": metadata_mode,
            "on_error": on_error,
            "image_fetcher": image_fetcher,
        }
        super().__init__(**settings, **fields, **kwargs)
        self._engine = engine
        self._rebuild_problem = problem

    @classmethod
    def class_name(cls) -> str:
        return "MiniRerank"

    def to_dict(self, **kwargs: Any) -> dict[str, Any]:
        """The settings as a dict (``from_dict`` loads the same engine); ``ValueError`` for a shared engine that
        its settings cannot rebuild (a custom embedder, cache directory or store, or one built directly)."""
        refuse_unrebuildable("MiniRerank", self._rebuild_problem)
        return super().to_dict(**kwargs)

    @property
    def engine(self) -> MiniReranker | RemoteReranker:
        """The loaded engine; pass it to other components to share the model. In remote mode, the client of the
        server (it has no model to share)."""
        return self._engine

    # -- LlamaIndex entry points ----------------------------------------------------------------

    def _postprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        query_bundle = self._require_query(query_bundle)
        dispatcher.event(self._start_event(nodes, query_bundle))
        with self.callback_manager.event(CBEventType.RERANKING, payload=self._payload(nodes, query_bundle)) as event:
            reranked: list[NodeWithScore] = []
            if nodes:
                call = self._engine_call(nodes, query_bundle)
                results = self._engine.rerank(call.query, call.candidates, top_n=self.top_n, on_error=self.on_error)
                reranked = self._reranked(nodes, call, results)
            event.on_end(payload={EventPayload.NODES: reranked})
        dispatcher.event(ReRankEndEvent(nodes=reranked))
        return reranked

    @dispatcher.span
    async def _apostprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        query_bundle = self._require_query(query_bundle)
        dispatcher.event(self._start_event(nodes, query_bundle))
        with self.callback_manager.event(CBEventType.RERANKING, payload=self._payload(nodes, query_bundle)) as event:
            reranked: list[NodeWithScore] = []
            if nodes:
                if self.image_fetcher is not None:  # downloads block: keep them off the event loop
                    call = await asyncio.to_thread(self._engine_call, nodes, query_bundle)
                else:
                    call = self._engine_call(nodes, query_bundle)
                # The engine scores in a worker thread and serializes concurrent calls with its own lock.
                results = await self._engine.arerank(
                    call.query, call.candidates, top_n=self.top_n, on_error=self.on_error
                )
                reranked = self._reranked(nodes, call, results)
            event.on_end(payload={EventPayload.NODES: reranked})
        dispatcher.event(ReRankEndEvent(nodes=reranked))
        return reranked

    # -- conversion at the edge -----------------------------------------------------------------

    def _require_query(self, query_bundle: QueryBundle | None) -> QueryBundle:
        if query_bundle is None:
            raise ValueError(
                "MiniRerank needs a query: pass query_bundle= (or query_str=) to postprocess_nodes, or use it "
                "in a query engine"
            )
        return query_bundle

    def _engine_call(self, nodes: Sequence[NodeWithScore], query_bundle: QueryBundle) -> _EngineCall:
        query = query_to_engine(query_bundle, self.image_fetcher)
        candidates: list[Candidate] = []
        positions: list[int] = []
        for position, scored in enumerate(nodes):
            try:
                candidates.append(node_to_candidate(scored.node, self.metadata_mode, self.image_fetcher))
            except MiniRerankError as exc:  # a failed download; the engine reports every other problem
                if self.on_error == "raise":
                    raise CandidateError(position, exc, scored.node.node_id) from exc
                logger.warning("MiniRerank left out node %s: %s", scored.node.node_id, exc)
                continue
            positions.append(position)
        return _EngineCall(query, candidates, positions)

    def _reranked(
        self, nodes: Sequence[NodeWithScore], call: _EngineCall, results: RerankResults
    ) -> list[NodeWithScore]:
        for skipped in results.skipped:
            logger.warning("MiniRerank left out node %s: %s", skipped.id, skipped.error)
        return [self._rescored(nodes[call.positions[result.index]], result.score) for result in results]

    def _rescored(self, original: NodeWithScore, score: float) -> NodeWithScore:
        """A new NodeWithScore around a copy of the node with its own metadata, copied deep (lists and
        dicts in it too) and its own lists of excluded metadata keys: the caller's nodes are never modified."""
        node = original.node
        metadata = copied_metadata(node.metadata)
        if self.keep_retrieval_score:
            metadata["retrieval_score"] = original.score
        update = {
            "metadata": metadata,
            "excluded_embed_metadata_keys": list(node.excluded_embed_metadata_keys),
            "excluded_llm_metadata_keys": list(node.excluded_llm_metadata_keys),
        }
        return NodeWithScore(node=node.model_copy(update=update), score=score)

    # -- events ---------------------------------------------------------------------------------

    def _top_k(self, nodes: Sequence[NodeWithScore]) -> int:
        return len(nodes) if self.top_n is None else self.top_n

    def _start_event(self, nodes: list[NodeWithScore], query_bundle: QueryBundle) -> ReRankStartEvent:
        return ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=self._top_k(nodes), model_name=self.model)

    def _payload(self, nodes: list[NodeWithScore], query_bundle: QueryBundle) -> dict[str, Any]:
        return {
            EventPayload.NODES: nodes,
            EventPayload.MODEL_NAME: self.model,
            EventPayload.QUERY_STR: query_bundle.query_str,
            EventPayload.TOP_K: self._top_k(nodes),
        }
