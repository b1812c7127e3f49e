"""``MiniReranker``: the public engine. A call prepares its sides (:mod:`.sides`), plans the shared and per-pair
work (:mod:`.plan`) and runs the plan (:mod:`.execution`); loading lives in :mod:`.loading`."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..demo_model import DEMO_MODEL
from ..errors import MiniRerankError
from ..store import MemoryPrefixStore, PrefixStore, Storage, StoreConfig
from .config import PresetName, RerankConfig
from .counters import WorkCounters
from .encoder import FeatureCache, SegmentEncoder
from .execution import compute_prefix_entry, finite_scores, plan_logits, trainable_logits
from .images import ImageFetcher
from .inputs import Candidate, OnError, Query, RerankResults
from .keys import prefix_key
from .loading import load
from .modeling import Backbone, SegmentStates
from .plan import CallPlan, pair_segments, plan_call
from .precache_report import PrecacheReport
from .precaching import precache_documents
from .prompts import Segment, SideContent
from .request import (
    PreparedRequest,
    RerankRequest,
    abandoned_rows,
    merged_pairs,
    prepare_pairs,
    prepare_request,
    request_results,
)
from .sides import candidate_list, check_on_error, pair_list, prepare_side

__all__ = ["MiniReranker", "RerankRequest", "WorkCounters"]

_QueryLike = str | Query
_CandidateLike = str | Candidate


class MiniReranker:
    """A point-wise Qwen3-VL reranker: P(relevant) = sigmoid(logit "yes" - logit "no").

    Construct with :meth:`from_pretrained`. The model runs under an internal lock, so one instance may be
    shared by threads and by concurrent ``arerank`` calls; inputs are prepared (images read and resized)
    outside it. :meth:`rerank_many` scores several requests in shared forwards.
    """

    def __init__(
        self,
        backbone: Backbone,
        config: RerankConfig | PresetName = "paper",
        *,
        store: PrefixStore | None = None,
        embedder: Backbone | None = None,
        image_fetcher: ImageFetcher | None = None,
    ) -> None:
        self.backbone = backbone
        self.store: PrefixStore = store if store is not None else MemoryPrefixStore()
        self.image_fetcher = image_fetcher
        self.counters = WorkCounters()
        #: Embeds segments for this engine; its importance LRU is shared across calls.
        self.encoder = SegmentEncoder(backbone, embedder or backbone, self.counters)
        self._lock = threading.RLock()
        self.config = config
        #: The :meth:`from_pretrained` arguments it was loaded with (name as given, options not at their default),
        #: None when built directly: what a framework component writes down to load the same engine again.
        self.loaded_as: dict[str, object] | None = None

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path = DEMO_MODEL,
        *,
        config: RerankConfig | PresetName | None = None,
        device: str | torch.device | None = "cpu",
        dtype: str | torch.dtype | None = "auto",
        store: StoreConfig | dict[str, Any] | None = None,
        cache_dir: str | Path | None = None,
        cache_url: str | None = None,
        cache_storage: Storage | None = None,
        cache_size_limit: int | None = None,
        cache_namespace: str | None = None,
        cache_ttl: float | None = None,
        cache_memory_limit: int | None = None,
        cache_local_dir: str | Path | None = None,
        embedder: str | Path | Backbone | None = None,
        image_fetcher: ImageFetcher | None = None,
    ) -> MiniReranker:
        """Load a Qwen3-VL checkpoint (local folder or hub id) as a reranker.

        Args:
            name_or_path: a ``Qwen3VLForConditionalGeneration`` checkpoint (e.g. Qwen3-VL-Reranker-2B); by default
                ``"minirerank-demo"``, the embedded demo model (see :mod:`minirerank_integrations.demo_model`):
                its dense variant for ``config="dense"`` (or any query-first configuration), else its adapted
                variant, guided by the dense variant as embedder unless ``embedder`` is given.
            config: a :class:`RerankConfig` or a preset name (``"paper"``, ``"dense"``), checked against
                the model's depth here. None: the configuration the checkpoint was adapted to, when its folder
                holds one (``minirerank_config.json``, as the demo's adapted variant does), else ``"paper"``.
            device: where the weights live; None: cuda, mps or cpu, whichever is present.
            dtype: how they are stored: ``"auto"`` (default) is bfloat16 on CUDA (with TF32 for float32
                matmuls) and float32 elsewhere; scores are computed in float32 regardless.
            store: the prefix store's settings, a :class:`StoreConfig` (or a dict of one): a directory or a Redis
                URL, the stored precision, size and memory limits, TTL (each field documents its unit). None
                keeps prefixes in this process's memory. On CUDA its memory tier holds entries on the device.
            cache_dir, cache_url, cache_storage, cache_size_limit, cache_namespace, cache_ttl, cache_memory_limit,
                cache_local_dir: shorthands for the StoreConfig fields ``dir``, ``url``, ``storage``, ... (they
                change ``store`` where both are given). A store that cannot be reached never fails a call.
            embedder: the checkpoint that ranks visual tokens for pruning; defaults to the reranker's own.
            image_fetcher: called with an http(s) URL to get the image's bytes; without it URLs are refused.
        """
        loaded = load(
            name_or_path,
            config=config,
            device=device,
            dtype=dtype,
            store=store,
            store_options={
                "cache_dir": cache_dir,
                "cache_url": cache_url,
                "cache_storage": cache_storage,
                "cache_size_limit": cache_size_limit,
                "cache_namespace": cache_namespace,
                "cache_ttl": cache_ttl,
                "cache_memory_limit": cache_memory_limit,
                "cache_local_dir": cache_local_dir,
            },
            embedder=embedder,
            image_fetcher=image_fetcher,
        )
        reranker = cls(
            loaded.backbone,
            loaded.config,
            store=loaded.store,
            embedder=loaded.embedder,
            image_fetcher=image_fetcher,
        )
        reranker.loaded_as = loaded.loaded_as
        return reranker

    @property
    def config(self) -> RerankConfig:
        return self._config

    @config.setter
    def config(self, config: RerankConfig | PresetName) -> None:
        resolved = RerankConfig.for_model(config, self.backbone.num_layers)
        self.encoder.check(resolved)
        # Taken under the call lock: a call in progress finishes on the configuration it started with.
        with self._lock:
            self._config = resolved

    @property
    def embedder(self) -> Backbone:
        """The backbone that ranks visual tokens for pruning (the reranker's own unless another was given)."""
        return self.encoder.embedder

    @property
    def num_layers(self) -> int:
        return self.backbone.num_layers

    @contextmanager
    def using(self, config: RerankConfig | PresetName) -> Iterator[MiniReranker]:
        """Serve under ``config`` inside the block, holding the engine's lock throughout so no other thread
        scores with it; the previous configuration is restored on leaving, also after an error."""
        with self._lock:
            original = self._config
            try:
                self.config = config
                yield self
            finally:
                self._config = original

    def rerank(
        self,
        query: _QueryLike,
        candidates: Sequence[_CandidateLike],
        *,
        top_n: int | None = None,
        on_error: OnError = "raise",
    ) -> RerankResults:
        """Score every candidate against ``query`` and return them best first.

        Ties keep input order. ``top_n`` keeps the best n (more than the list returns all).
        ``on_error="raise"`` raises :class:`CandidateError` naming the first bad candidate;
        ``"skip"`` leaves bad candidates out and lists them in ``results.skipped``.
        """
        (result,) = self.rerank_many([RerankRequest(query, candidates, top_n, on_error)])
        return result  # type: ignore[return-value]  # without return_exceptions errors raise

    def rerank_many(
        self, requests: Sequence[RerankRequest], *, return_exceptions: bool = False
    ) -> list[RerankResults | MiniRerankError]:
        """Several :meth:`rerank` calls scored together: the pairs of every request join one plan, so distinct
        prefixes and suffixes are read or computed once across requests and pairs are batched together. Each
        request gets exactly the results it would get alone.

        A request whose query is bad, or whose candidate is bad under ``on_error="raise"``, raises its error;
        with ``return_exceptions=True`` the error takes its place in the list and the others are scored.
        """
        return self._rerank_many(requests, return_exceptions)

    def _rerank_many(
        self, requests: Sequence[RerankRequest], return_exceptions: bool, cancelled: threading.Event | None = None
    ) -> list[RerankResults | MiniRerankError]:
        cfg = self._config  # one configuration from start to end of the call
        prepared = [self.prepare_request(request, cfg) for request in requests]
        if not return_exceptions:
            for p in prepared:
                if p.error is not None:
                    raise p.error
        return self.score_prepared(list(zip(requests, prepared)), cfg, cancelled=cancelled)

    def prepare_request(self, request: RerankRequest, cfg: RerankConfig | None = None) -> PreparedRequest:
        """The first half of :meth:`rerank_many`, outside the model lock: ``request``'s sides read and checked
        (images keyed, decoded when new). Its own errors are kept in the result, not raised. A server prepares
        each request as it arrives and scores, with :meth:`score_prepared`, whatever is prepared once the model
        is free."""
        return prepare_request(self.prepare, request, cfg or self._config)

    def score_prepared(
        self,
        items: Sequence[tuple[RerankRequest, PreparedRequest]],
        cfg: RerankConfig | None = None,
        *,
        cancelled: threading.Event | None = None,
        abandoned: Sequence[threading.Event] | None = None,
    ) -> list[RerankResults | MiniRerankError]:
        """The second half of :meth:`rerank_many`: the prepared requests (prepared under ``cfg``) scored in one
        plan; a request prepared with an error gets that error. ``abandoned[i]`` set means request ``i``'s caller
        left: its pairs are left out of the batches not yet run (a pair another request wants still runs) and it
        gets :class:`CallCancelled`; once every request is abandoned, or ``cancelled`` is set, the call stops
        between batches with :class:`CallCancelled`."""
        cfg = cfg or self._config
        pairs, owner = merged_pairs(items)
        gone = abandoned or [threading.Event() for _ in items]
        logits = self._logits(pairs, cfg, cancelled, owner, gone)
        kept = [k for k in range(len(pairs)) if not gone[owner[k]].is_set()]
        return request_results(items, dict(zip(kept, finite_scores(logits[kept], kept) if kept else [])), gone)

    async def arerank(
        self,
        query: _QueryLike,
        candidates: Sequence[_CandidateLike],
        *,
        top_n: int | None = None,
        on_error: OnError = "raise",
    ) -> RerankResults:
        """:meth:`rerank` in a worker thread; cancelling the task stops the computation between batches."""
        (result,) = await self.arerank_many([RerankRequest(query, candidates, top_n, on_error)])
        return result  # type: ignore[return-value]  # without return_exceptions errors raise

    async def arerank_many(
        self, requests: Sequence[RerankRequest], *, return_exceptions: bool = False
    ) -> list[RerankResults | MiniRerankError]:
        """:meth:`rerank_many` in a worker thread, so the event loop is not blocked. Cancelling the task (or a
        timeout around it) stops the computation between batches: abandoned calls do not keep the model busy."""
        cancelled = threading.Event()
        try:
            return await asyncio.to_thread(self._rerank_many, requests, return_exceptions, cancelled)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def score(self, pairs: Sequence[tuple[_QueryLike, _CandidateLike]]) -> list[float]:
        """P(relevant) of each (query, candidate) pair, in input order; a bad pair raises
        :class:`CandidateError` naming its index."""
        cfg = self._config
        sides = self.prepare_pairs(pair_list(pairs), cfg)
        return finite_scores(self._logits(sides, cfg), range(len(sides))) if sides else []

    @torch.no_grad()
    def reference_scores(self, pairs: Sequence[tuple[_QueryLike, _CandidateLike]]) -> list[float]:
        """The slow definition of the current configuration: each whole pair through the naive
        per-layer-masked loop (``docs/design.md``, "The miniReranker computation"). For verification."""
        cfg = self._config
        sides = self.prepare_pairs(pair_list(pairs), cfg)
        with self._lock:
            logits = [trainable_logits(self.encoder, [pair], cfg, fast=False) for pair in sides]  # one pair a pass
        return finite_scores(torch.cat(logits), range(len(sides))) if sides else []

    def close(self) -> None:
        """Write what the prefix store has queued (``write_behind``) and release its files and connections; a
        later call reopens them. ``with MiniReranker.from_pretrained(...) as reranker:`` closes on leaving."""
        self.store.flush()
        self.store.close()

    def __enter__(self) -> MiniReranker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def precache(
        self, candidates: Iterable[_CandidateLike], *, progress: bool = True, on_error: OnError = "raise"
    ) -> PrecacheReport:
        """Compute and store the document-side prefixes of ``candidates`` ahead of queries.

        Resumable: prefixes already in the store are not computed again (``present``). A bad candidate raises
        :class:`CandidateError` (``on_error="raise"``; what came before it is stored) or is ``skipped`` with
        its reason (``"skip"``). Returns one outcome per candidate, in order: ``stored``, ``present`` or
        ``skipped``; an entry the store of record does not hold once the call's writes are flushed (a write
        that failed, an entry evicted by later ones) is ``skipped`` too, naming the store.
        """
        check_on_error(on_error)
        return precache_documents(
            candidate_list(candidates, "precache"),
            self._config,  # every prefix of this run is computed and keyed under one configuration
            prepare=self.prepare,
            document_prefix=self.document_prefix,
            compute=lambda prefix, cfg: compute_prefix_entry(self.encoder, prefix, cfg),
            store=self.store,
            lock=self._lock,
            progress=progress,
            on_error=on_error,
        )

    def prepare(
        self, item: Query | Candidate, what: str, cfg: RerankConfig | None = None, *, side: str = "candidate"
    ) -> SideContent:
        """One side read and checked: its text and its images, resized, with their token grids."""
        return prepare_side(
            self.backbone,
            item,
            what,
            cfg or self._config,
            fetcher=self.image_fetcher,
            side=side,  # type: ignore[arg-type]
        )

    def prepare_pairs(
        self, pairs: Sequence[tuple[_QueryLike, _CandidateLike]], cfg: RerankConfig | None = None
    ) -> list[tuple[SideContent, SideContent]]:
        """Each pair's sides; a bad candidate raises :class:`CandidateError` naming its index."""
        return prepare_pairs(self.prepare, pairs, cfg or self._config)

    def segments(
        self, q: SideContent, d: SideContent, cfg: RerankConfig | None = None, *, side: str | None = None
    ) -> tuple[Segment, Segment | None]:
        """A pair's prompt: (whole prompt, None) query-first, else (prefix, suffix) with ``side`` as prefix."""
        return pair_segments(self.backbone, q, d, cfg or self._config, side)  # type: ignore[arg-type]

    def document_prefix(self, d: SideContent, cfg: RerankConfig | None = None) -> tuple[str, Segment]:
        """The store key and segment of document ``d``'s prefix (what :meth:`precache` stores)."""
        cfg = cfg or self._config
        prefix, _ = pair_segments(self.backbone, SideContent("NULL"), d, cfg, "document")
        return self.prefix_key(prefix, cfg), prefix

    def prefix_key(self, prefix: Segment, cfg: RerankConfig | None = None) -> str:
        """The store key of ``prefix`` under ``cfg`` (``docs/design.md``, "What a prefix key covers")."""
        return prefix_key(prefix, cfg or self._config, self.backbone, self.encoder.embedder)

    def states(
        self, segment: Segment, cache: FeatureCache | None = None, cfg: RerankConfig | None = None
    ) -> SegmentStates:
        """Embed a segment (encoding its images) and drop pruned visual tokens."""
        return self.encoder.states(segment, cfg or self._config, cache)

    def plan(self, pairs: Sequence[tuple[SideContent, SideContent]], cfg: RerankConfig | None = None) -> CallPlan:
        """The plan of scoring prepared ``pairs``: segments, prefix keys, distinct prefixes and suffixes."""
        return plan_call(self.backbone, self.encoder.embedder, pairs, cfg or self._config)

    def logits(self, pairs: Sequence[tuple[_QueryLike, _CandidateLike]], *, fast: bool = False) -> torch.Tensor:
        """logit(yes) - logit(no) of each pair [batch], float32, with gradients: what training optimizes is
        exactly what the fast path serves.

        ``fast=False`` computes the reference definition of the current configuration. ``fast=True`` (vision-first
        configurations) computes the same numbers as serving does: each distinct prefix up to the band end only,
        each distinct suffix's pre-band layers once, the per-pair layers last. Training uses it: same loss, less
        work; a test holds both paths and their gradients equal.
        """
        cfg = self._config  # one configuration for the whole step
        return trainable_logits(self.encoder, self.prepare_pairs(pair_list(pairs), cfg), cfg, fast=fast)

    def _logits(
        self,
        pairs: list[tuple[SideContent, SideContent]],
        cfg: RerankConfig,
        cancelled: threading.Event | None = None,
        owner: list[int] | None = None,
        gone: Sequence[threading.Event] = (),
    ) -> torch.Tensor:
        """Each pair's logit [pairs] by the plan; a pair whose request ``gone[owner[k]]`` is set may be dropped
        (NaN) from the batches not yet run."""
        if not pairs:
            return torch.zeros(0)
        with self._lock:
            plan = plan_call(self.backbone, self.encoder.embedder, pairs, cfg)
            rows = len(plan.singles) if cfg.format == "query_first" else len(plan.rows)
            dropped = abandoned_rows(plan.pair_rows, rows, owner or [], gone)
            return plan_logits(plan, self.encoder, self.store, cancelled, dropped)
