"""``MiniRerankPrecache``: an ingestion step that fills the reranker's prefix store as nodes are ingested."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from typing import Any, Literal

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.schema import BaseNode, MetadataMode, TransformComponent
from minirerank_integrations import (
    Candidate,
    CandidateError,
    MiniReranker,
    MiniRerankError,
    RerankConfig,
    StoreConfig,
)

from ._convert import ImageFetcher, node_to_candidate
from ._engine import DEFAULT_MODEL, STORE_DESCRIPTION, ModelLike, PresetName, StoreLike, resolve_engine
from .base import MiniRerank

logger = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]


class MiniRerankPrecache(TransformComponent):
    """Compute each node's document-side prefix ahead of queries, so reranking it later reuses it.

    Put it last in an ``IngestionPipeline`` (after any step that changes text or metadata): a prefix is
    only reused for a node whose text and image are the same at query time. Nodes pass through
    unchanged. Give it the ``MiniRerank`` (or the ``MiniReranker``) that will rerank the nodes, so both
    use one engine and one store; a model name loads a separate engine, useful with a shared on-disk
    store (``store``, or its ``cache_dir`` shorthand).

    The engine's configuration must be vision-first with the document side as prefix (the ``paper``
    preset); otherwise the engine raises ``InputError``.
    """

    model: str = Field(description="Name or path of the Qwen3-VL reranker checkpoint the engine was loaded from.")
    config: RerankConfig | PresetName | None = Field(
        default=None,
        description="Engine configuration or preset name; None: 'paper' when loading, the engine's own when "
        "sharing one.",
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
    device: str | None = Field(default=None, description="Torch device of the model (None: the best present).")
    dtype: str | None = Field(default=None, description="Weights dtype: float32, bfloat16 or float16.")
    batch_size: int | None = Field(
        default=None, gt=0, description="Pairs per forward pass, set in the engine's config (None: the config's)."
    )
    metadata_mode: MetadataMode = Field(
        default=MetadataMode.EMBED,
        description="How a node's text is rendered; must match the MiniRerank that reranks the nodes.",
    )
    on_error: OnError = Field(
        default="raise",
        description="A node that cannot be cached: 'raise' a CandidateError naming it, or 'skip' it (logged; the "
        "node still passes through).",
    )
    show_progress: bool = Field(default=False, description="Show a progress bar while prefixes are computed.")
    image_fetcher: ImageFetcher | None = Field(
        default=None,
        exclude=True,
        description="Called with an http(s) image URL, returns its bytes; without it image URLs are not fetched.",
    )

    _engine: MiniReranker = PrivateAttr()

    def __init__(
        self,
        model: ModelLike | MiniRerank = DEFAULT_MODEL,
        config: RerankConfig | PresetName | None = None,
        cache_dir: str | os.PathLike | None = None,
        cache_url: str | None = None,
        store: StoreLike | None = None,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int | None = None,
        metadata_mode: MetadataMode | None = None,
        on_error: OnError = "raise",
        show_progress: bool = False,
        image_fetcher: ImageFetcher | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(model, MiniRerank):
            if not isinstance(model.engine, MiniReranker):
                raise ValueError(
                    "MiniRerankPrecache needs a local engine, and this MiniRerank scores through a server "
                    f"({model.base_url}); pre-cache on the server (POST /v1/precache, or `minirerank precache` with the "
                    "server's --cache-dir or --cache-url)"
                )
            # Convert nodes exactly as the postprocessor will, unless told otherwise.
            metadata_mode = model.metadata_mode if metadata_mode is None else metadata_mode
            image_fetcher = model.image_fetcher if image_fetcher is None else image_fetcher
            model = model.engine
        if isinstance(config, dict):
            config = RerankConfig.model_validate(config)
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
        # One dict: the checker reads the base class's own fields as __init__'s keywords, not this class's.
        settings: dict[str, Any] = {
            "metadata_mode": MetadataMode.EMBED if metadata_mode is None else metadata_mode,
            "on_error": on_error,
            "show_progress": show_progress,
            "image_fetcher": image_fetcher,
        }
        super().__init__(**settings, **fields, **kwargs)
        self._engine = engine

    @classmethod
    def class_name(cls) -> str:
        return "MiniRerankPrecache"

    @property
    def engine(self) -> MiniReranker:
        """The engine whose prefix store this step fills."""
        return self._engine

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> Sequence[BaseNode]:
        """Pre-cache ``nodes`` and return them as they came (the same objects)."""
        progress = bool(kwargs.get("show_progress", self.show_progress))
        positions: list[int] = []  # each candidate's place among the nodes
        candidates: list[Candidate] = []
        for position, node in enumerate(nodes):
            try:
                candidates.append(node_to_candidate(node, self.metadata_mode, self.image_fetcher))
                positions.append(position)
            except MiniRerankError as exc:  # a failed download
                self._reject(CandidateError(position, exc, node.node_id))
        try:
            report = self._engine.precache(candidates, progress=progress, on_error=self.on_error)
        except CandidateError as exc:  # on_error="raise": the first bad node (those before it are stored)
            raise CandidateError(positions[exc.index], exc.cause, exc.candidate_id) from exc.cause
        for outcome in report:
            if outcome.error is not None:  # a bad node, skipped
                self._reject(CandidateError(positions[outcome.index], outcome.error.cause, outcome.id))
            elif outcome.status == "skipped":  # the store did not keep its entry: not the node's fault
                logger.warning("MiniRerankPrecache did not cache node %s: %s", outcome.id, outcome.reason)
        return nodes

    async def acall(self, nodes: Sequence[BaseNode], **kwargs: Any) -> Sequence[BaseNode]:
        """:meth:`__call__` in a worker thread, so the event loop is not blocked while prefixes are computed."""
        return await asyncio.to_thread(self.__call__, nodes, **kwargs)

    def _reject(self, error: CandidateError) -> None:
        if self.on_error == "raise":
            raise error from error.cause
        logger.warning("MiniRerankPrecache did not cache node %s: %s", error.candidate_id, error.cause)
