"""``MiniReranker``: the public engine. Turns queries and candidates into segments, plans the shared
and per-pair work, and runs it through the layer loop."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal, get_args

import torch
from tqdm.auto import tqdm

from ..demo_model import DEMO_MODEL, demo_checkpoint
from ..errors import CandidateError, ConfigError, ImageLoadError, InputError, MiniRerankError
from ..store import DEFAULT_MEMORY_LIMIT, MemoryPrefixStore, PrefixEntry, PrefixStore, Storage, open_store
from .config import PresetName, RerankConfig
from .images import ImageFetcher, image_digest, prepare_image
from .inputs import (
    Candidate,
    Query,
    RerankResult,
    RerankResults,
    SkippedCandidate,
    as_candidate,
    as_query,
)
from .layers import (
    compute_prefix,
    compute_prefixes,
    compute_suffix_preband,
    pair_logits,
    reference_logits,
    single_segment_logits,
)
from .modeling import ADAPT_FILE, CONFIG_FILE, Backbone, SegmentStates, load_backbone
from .planning import cut_shared_start, distinct_segments, segment_key
from .prompts import PreparedImage, Segment, SideContent, query_first_segment, vision_first_segments
from .pruning import embedder_importances, keep_mask, random_importance

logger = logging.getLogger(__name__)

#: Pairs whose prefixes one store lookup fetches. The next window is fetched (read, checked, decoded) on a
#: reader thread while this one is scored, so only the first window's read is not hidden behind compute; two
#: windows of entries are held at most.
_FETCH_WINDOW = 32

#: Bumped whenever what a prefix entry holds, or how it is computed, changes: old entries then miss.
ENGINE_FORMAT_VERSION = 2  # 2: SDPA attention, paper band [E // 2, E), guide layers in the key

OnError = Literal["raise", "skip"]
_QueryLike = str | Query
_CandidateLike = str | Candidate


@dataclass
class WorkCounters:
    """How much work the engine did since construction (or the last ``reset``)."""

    prefix_computations: int = 0  # prefixes run through the decoder (store misses)
    prefix_hits: int = 0  # prefixes read from the store
    suffix_prebands: int = 0  # distinct suffixes run through the layers below the band
    pair_passes: int = 0  # (prefix, suffix) pairs run through band start..exit
    single_passes: int = 0  # whole query-first prompts scored
    vision_encodings: int = 0  # images run through the vision encoder
    embedder_passes: int = 0  # images ranked by the embedder for pruning

    def reset(self) -> None:
        for f in fields(self):
            setattr(self, f.name, 0)


class MiniReranker:
    """A point-wise Qwen3-VL reranker: P(relevant) = sigmoid(logit "yes" - logit "no").

    Construct with :meth:`from_pretrained`. Calls are serialized by an internal lock, so one instance
    may be shared by threads and by concurrent ``arerank`` calls.
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
        self.embedder = embedder or backbone
        self.store: PrefixStore = store if store is not None else MemoryPrefixStore()
        self.image_fetcher = image_fetcher
        self.counters = WorkCounters()
        self._lock = threading.RLock()
        self._importance: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self.config = config  # type: ignore[assignment]  # validated by the setter
        #: The :meth:`from_pretrained` arguments this engine was loaded with (``name_or_path`` as given, e.g.
        #: ``"minirerank-demo"``, and any option other than its default); None when built directly. What a
        #: framework component may write down so that loading it again gives the same engine.
        self.loaded_as: dict[str, object] | None = None

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path = DEMO_MODEL,
        *,
        config: RerankConfig | PresetName | None = None,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        cache_dir: str | Path | None = None,
        cache_size_limit: int | None = None,
        cache_storage: Storage = "float32",
        cache_url: str | None = None,
        cache_namespace: str = "minirerank",
        cache_ttl: float | None = None,
        cache_memory_limit: int = DEFAULT_MEMORY_LIMIT,
        cache_local_dir: str | Path | None = None,
        embedder: str | Path | Backbone | None = None,
        image_fetcher: ImageFetcher | None = None,
    ) -> MiniReranker:
        """Load a Qwen3-VL checkpoint (local folder or hub id) as a reranker.

        Args:
            name_or_path: a ``Qwen3VLForConditionalGeneration`` checkpoint (e.g. Qwen3-VL-Reranker-2B); by default
                ``"minirerank-demo"``, the embedded demo model (see :mod:`minirerank_integrations.demo_model`):
                its dense variant for ``config="dense"`` (or any query-first configuration), else its adapted variant, guided by the dense
                variant as embedder unless ``embedder`` is given.
            config: a :class:`RerankConfig` or a preset name (``"paper"``, ``"dense"``), checked against
                the model's depth here. None: the configuration the checkpoint was adapted to, when its folder
                holds one (``minirerank_config.json``, as the demo's adapted variant does), else ``"paper"``.
            device, dtype: where and how the weights live; scores are computed in float32 regardless.
            cache_dir: a directory for the persistent prefix store; None keeps prefixes in memory.
            cache_size_limit: bytes the prefix store may hold (memory or directory; Redis uses its maxmemory).
            cache_storage: precision of stored keys/values; float16, bfloat16 and int8 trade a bounded
                score deviation (see README) for a half or a quarter of the bytes.
            cache_url: a Redis or Valkey server shared by processes and hosts (``redis://host:6379/0``,
                ``rediss://`` for TLS; a password in the URL or in ``$MINIRERANK_REDIS_PASSWORD``), instead
                of ``cache_dir``. When it cannot be reached, reranking goes on without it (one warning).
            cache_namespace: prefix of the Redis keys, so that several deployments share one server.
            cache_ttl: seconds a Redis entry lives after it is written; None: until Redis evicts it.
            cache_memory_limit: bytes of decoded entries kept in memory in front of a directory or Redis
                (hot prefixes are then neither fetched nor decoded per query); 0: none.
            cache_local_dir: a local directory in front of Redis (a second tier, per host).
            embedder: the checkpoint that ranks visual tokens for pruning; defaults to the reranker's own.
            image_fetcher: called with an http(s) URL to get the image's bytes; without it URLs are refused.
        """
        # Store settings are checked before minutes of model loading, not after.
        if cache_size_limit is not None and (
            not isinstance(cache_size_limit, int) or isinstance(cache_size_limit, bool) or cache_size_limit <= 0
        ):
            raise ConfigError(f"cache_size_limit must be a positive number of bytes or None, got {cache_size_limit!r}")
        if cache_dir is not None and not str(cache_dir).strip():
            raise ConfigError("cache_dir is an empty string (it would be the current directory); pass a directory")
        if cache_storage not in get_args(Storage):
            raise ConfigError(f"cache_storage {cache_storage!r} is unknown; use {', '.join(get_args(Storage))}")
        loaded_as: dict[str, object] = {"name_or_path": str(name_or_path), "device": str(device), "dtype": str(dtype)}
        for option, value, default in (
            ("embedder", embedder, None),
            ("cache_dir", cache_dir, None),
            ("cache_size_limit", cache_size_limit, None),
            ("cache_storage", cache_storage, "float32"),
            ("image_fetcher", image_fetcher, None),
        ):
            if value != default:
                loaded_as[option] = value if isinstance(value, (str, int)) else str(value)
        if str(name_or_path) == DEMO_MODEL:
            # The dense weights for the query-first format (the preset or a configuration), else the adapted ones.
            dense = config == "dense" or (isinstance(config, RerankConfig) and config.format == "query_first")
            variant = "dense" if dense else "paper"
            name_or_path = demo_checkpoint(variant)
            if variant == "paper" and embedder is None:
                embedder = demo_checkpoint("dense")
        saved = _saved_config(Path(name_or_path))
        if config is None:
            config = saved or "paper"
        if embedder is None:
            embedder = _saved_embedder(Path(name_or_path))
        backbone = load_backbone(name_or_path, device=device, dtype=dtype)
        resolved = (
            RerankConfig.preset(config, backbone.num_layers)
            if isinstance(config, str)
            else config.resolve(backbone.num_layers)
        )
        unvalidated = unvalidated_parts(resolved, saved, backbone.num_layers)
        if unvalidated:
            _warn_unvalidated(str(name_or_path), unvalidated, saved is not None)
        if isinstance(embedder, (str, Path)):
            embedder = load_backbone(embedder, device=device, dtype=dtype)
        if cache_dir is not None and cache_url is not None:
            raise ConfigError(
                f"pass cache_dir ({cache_dir!r}) or cache_url, not both; "
                "use cache_local_dir for a local directory in front of Redis"
            )
        store = open_store(
            cache_url if cache_url is not None else cache_dir,
            storage=cache_storage,
            size_limit=cache_size_limit,
            memory_limit=cache_memory_limit,
            local_dir=cache_local_dir,
            namespace=cache_namespace,
            ttl=cache_ttl,
        )
        reranker = cls(backbone, config, store=store, embedder=embedder, image_fetcher=image_fetcher)
        reranker.loaded_as = loaded_as
        return reranker

    @property
    def config(self) -> RerankConfig:
        return self._config

    @config.setter
    def config(self, config: RerankConfig | PresetName) -> None:
        depth = self.backbone.num_layers
        if isinstance(config, str):
            resolved = RerankConfig.preset(config, depth)  # type: ignore[arg-type]  # preset() names the bad one
        elif isinstance(config, RerankConfig):
            resolved = config.resolve(depth)
        else:
            raise ConfigError(f"config must be a RerankConfig or a preset name, got {type(config).__name__}")
        # Taken under the call lock: a call in progress finishes on the configuration it started with.
        with self._lock:
            self._config = resolved

    @property
    def num_layers(self) -> int:
        return self.backbone.num_layers

    # -- public API -----------------------------------------------------------------------------

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
        _check_top_n(top_n)
        _check_on_error(on_error)
        candidates = _candidate_list(candidates, "rerank")
        with self._lock:
            cfg = self._config  # one configuration from start to end of the call
            q = self._prepare(as_query(query), "the query", cfg, side="query")
            kept: list[tuple[int, str | None, SideContent]] = []
            skipped: list[SkippedCandidate] = []
            for index, raw in enumerate(candidates):
                candidate_id = raw.id if isinstance(raw, Candidate) else None
                try:
                    kept.append((index, candidate_id, self._prepare(as_candidate(raw), f"candidate {index}", cfg)))
                except MiniRerankError as exc:
                    if on_error == "raise":
                        raise CandidateError(index, exc, candidate_id) from exc
                    logger.warning("skipping candidate %d: %s", index, exc)
                    skipped.append(SkippedCandidate(index, str(exc), candidate_id))
            scores = self._score_sides([(q, side) for _, _, side in kept], cfg)
        results = [RerankResult(index, score, cid) for (index, cid, _), score in zip(kept, scores)]
        results.sort(key=lambda r: (-r.score, r.index))
        return RerankResults(results if top_n is None else results[:top_n], skipped)

    async def arerank(
        self,
        query: _QueryLike,
        candidates: Sequence[_CandidateLike],
        *,
        top_n: int | None = None,
        on_error: OnError = "raise",
    ) -> RerankResults:
        """:meth:`rerank` in a worker thread, so the event loop is not blocked."""
        return await asyncio.to_thread(self.rerank, query, candidates, top_n=top_n, on_error=on_error)

    def score(self, pairs: Sequence[tuple[_QueryLike, _CandidateLike]]) -> list[float]:
        """P(relevant) of each (query, candidate) pair, in input order; a bad pair raises
        :class:`CandidateError` naming its index."""
        pairs = _pair_list(pairs)
        with self._lock:
            cfg = self._config
            return self._score_sides(self._prepare_pairs(pairs, cfg), cfg)

    @torch.no_grad()
    def reference_scores(self, pairs: Sequence[tuple[_QueryLike, _CandidateLike]]) -> list[float]:
        """The slow definition of the current configuration: each whole pair through the naive
        per-layer-masked loop (design notes, section 2). For verification, not for serving."""
        pairs = _pair_list(pairs)
        with self._lock:
            cfg = self._config
            out = []
            for q, d in self._prepare_pairs(pairs, cfg):
                if cfg.format == "query_first":
                    p_states = self._states(self._query_first(q, d, cfg), cfg=cfg)
                    s_states = p_states.select(torch.zeros_like(p_states.visual))  # nothing after it
                else:
                    prefix, suffix = self._vision_first(q, d, cfg=cfg)
                    p_states = self._states(prefix, cfg=cfg)
                    s_states = self._states(suffix, cfg=cfg).shifted(p_states.next_position)
                logit = reference_logits(self.backbone, [p_states], [s_states], cfg.band, cfg.exit_layer)
                out.append(float(torch.sigmoid(logit)[0]))
            return out

    def precache(
        self, candidates: Iterable[_CandidateLike], *, progress: bool = True, on_error: OnError = "raise"
    ) -> int:
        """Compute and store the document-side prefixes of ``candidates`` ahead of queries.

        Resumable: prefixes already in the store are skipped. A bad candidate raises
        :class:`CandidateError` (``on_error="raise"``) or is logged and passed over (``"skip"``).
        Returns how many prefixes were computed.
        """
        _check_on_error(on_error)
        items = _candidate_list(candidates, "precache")
        with self._lock:
            cfg = self._config  # every prefix of this run is computed and keyed under one configuration
        if cfg.format != "vision_first" or cfg.prefix_side == "query":
            raise InputError("precache needs format='vision_first' with the document side as prefix")
        computed = 0
        for index, raw in enumerate(tqdm(items, disable=not progress, desc="precache", unit="doc")):
            with self._lock:
                try:
                    side = self._prepare(as_candidate(raw), f"candidate {index}", cfg)
                except MiniRerankError as exc:
                    error = CandidateError(index, exc, raw.id if isinstance(raw, Candidate) else None)
                    if on_error == "raise":
                        raise error from exc
                    logger.warning("precache skips %s", error)
                    continue
                prefix, _ = self._vision_first(SideContent("NULL"), side, side="document", cfg=cfg)
                key = self._prefix_key(prefix, cfg)
                if key not in self.store:
                    self.store.put(key, self._compute_prefix(prefix, cfg=cfg))
                    computed += 1
        return computed

    # -- inputs ---------------------------------------------------------------------------------

    def _prepare(
        self, item: Query | Candidate, what: str, cfg: RerankConfig | None = None, *, side: str = "candidate"
    ) -> SideContent:
        """Read one side's images and check its text. ``what`` names the item in messages; a candidate's
        errors are wrapped in :class:`CandidateError` by the caller, so its images are named "image i"."""
        cfg = cfg or self._config
        if item.is_empty:
            raise InputError(f"{what} has neither text nor images")
        if item.text is not None:
            _check_encodable(item.text, what)
        images = []
        for number, source in enumerate(item.images):
            try:
                image = prepare_image(
                    source,
                    fetcher=self.image_fetcher,
                    min_pixels=cfg.min_pixels,
                    max_pixels=cfg.max_pixels,
                )
            except ImageLoadError as exc:
                label = f"{what}'s image {number}" if side == "query" else f"image {number}"
                raise ImageLoadError(f"{label}: {exc}") from exc
            images.append(self.backbone.prepared_image(image, image_digest(image)))
        pads = sum(im.num_tokens + 2 for im in images)  # + vision_start and vision_end
        if pads > cfg.max_length:
            raise InputError(f"{what}'s {len(images)} images need {pads} tokens, more than max_length {cfg.max_length}")
        return SideContent(item.text, tuple(images))

    def _prepare_pairs(
        self, pairs: Sequence[tuple[_QueryLike, _CandidateLike]], cfg: RerankConfig | None = None
    ) -> list[tuple[SideContent, SideContent]]:
        cfg = cfg or self._config
        prepared = []
        for index, (query, candidate) in enumerate(pairs):
            candidate_id = candidate.id if isinstance(candidate, Candidate) else None
            # A bad query is the query's error, named as such; only the candidate's own become CandidateError.
            q = self._prepare(as_query(query), f"the query of pair {index}", cfg, side="query")
            try:
                prepared.append((q, self._prepare(as_candidate(candidate), f"candidate {index}", cfg)))
            except MiniRerankError as exc:
                raise CandidateError(index, exc, candidate_id) from exc
        return prepared

    # -- segments and states --------------------------------------------------------------------

    def _query_first(self, q: SideContent, d: SideContent, cfg: RerankConfig | None = None) -> Segment:
        b = self.backbone
        cfg = cfg or self._config
        return query_first_segment(
            b.tokenizer, q, d, cfg.instruction, max_length=cfg.max_length, special_ids=b.special_ids
        )

    def _prefix_side(self, q: SideContent, d: SideContent, cfg: RerankConfig) -> Literal["query", "document"]:
        side = cfg.prefix_side
        if side != "auto":
            return side
        # The document side unless only the query carries images (design notes, section 2).
        return "query" if q.images and not d.images else "document"

    def _vision_first(
        self, q: SideContent, d: SideContent, side: str | None = None, cfg: RerankConfig | None = None
    ) -> tuple[Segment, Segment]:
        b, cfg = self.backbone, cfg or self._config
        return vision_first_segments(
            b.tokenizer,
            q,
            d,
            cfg.instruction,
            side or self._prefix_side(q, d, cfg),  # type: ignore[arg-type]
            max_length=cfg.max_length,
            special_ids=b.special_ids,
            instruction_in_prefix=cfg.instruction_in_prefix,
        )

    def _features(self, backbone: Backbone, image: PreparedImage, cache: dict | None = None):
        key = (id(backbone), image.digest)
        if cache is not None and key in cache:
            return cache[key]
        self.counters.vision_encodings += 1
        feats = backbone.encode_image(image)
        if cache is not None:
            cache[key] = feats
        return feats

    def _importance_key(self, image: PreparedImage, cfg: RerankConfig) -> tuple:
        return (
            cfg.pruning_guide,
            # The embedder's weight digest, not its identity: importances computed before its weights
            # changed (training, a merged adapter) must not be reused.
            cfg.pruning_seed if cfg.pruning_guide == "random" else self.embedder.fingerprint(),
            cfg.pruning_guide_layers if cfg.pruning_guide == "embedder" else None,
            image.digest,
        )

    @torch.no_grad()  # pruning ranks tokens; it is not trained through
    def _importance_of(self, image: PreparedImage, cache: dict, cfg: RerankConfig) -> torch.Tensor:
        key = self._importance_key(image, cfg)
        if key not in self._importance:
            self._prefetch_importances([image], cache, cfg)
        return self._importance[key]

    @torch.no_grad()
    def _prefetch_importances(self, images: Sequence[PreparedImage], cache: dict, cfg: RerankConfig) -> None:
        """Compute the missing importances of ``images``, with one batched embedder pass."""
        missing = [im for im in images if self._importance_key(im, cfg) not in self._importance]
        if not missing:
            return
        if cfg.pruning_guide == "random":
            values = [random_importance(image, cfg.pruning_seed) for image in missing]
        else:
            self.counters.embedder_passes += len(missing)
            values = embedder_importances(
                self.embedder, missing, lambda bb, im: self._features(bb, im, cache), cfg.pruning_guide_layers
            )
        for image, value in zip(missing, values):
            self._importance[self._importance_key(image, cfg)] = value
        while len(self._importance) > 4096:
            self._importance.popitem(last=False)

    def _states(self, segment: Segment, cache: dict | None = None, cfg: RerankConfig | None = None) -> SegmentStates:
        """Embed a segment (encoding its images) and drop pruned visual tokens."""
        cfg = cfg or self._config
        cache = {} if cache is None else cache
        feats = {im.digest: self._features(self.backbone, im, cache) for im in segment.images}
        states = self.backbone.embed(segment, feats)
        if cfg.keep_ratio < 1.0 and segment.images:
            importances = {im.digest: self._importance_of(im, cache, cfg) for im in segment.images}
            states = states.select(keep_mask(segment, states.visual, importances, cfg.keep_ratio))
        return states

    # -- keys -----------------------------------------------------------------------------------

    def _prefix_key(self, prefix: Segment, cfg: RerankConfig | None = None) -> str:
        """A sha256 of everything that shapes a stored prefix (issue: persistent prefix store, keys)."""
        cfg, b = cfg or self._config, self.backbone
        pruned = cfg.keep_ratio < 1.0
        parts = {
            "engine": ENGINE_FORMAT_VERSION,
            "model": b.fingerprint(),
            "dtype": str(b.dtype),
            "format": cfg.format,
            "band": list(cfg.band or ()),
            "keep_ratio": cfg.keep_ratio,
            "guide": cfg.pruning_guide if pruned else None,
            "guide_layers": cfg.pruning_guide_layers if pruned and cfg.pruning_guide == "embedder" else None,
            "guide_id": (cfg.pruning_seed if cfg.pruning_guide == "random" else self.embedder.fingerprint())
            if pruned
            else None,
            "pixels": [cfg.min_pixels, cfg.max_pixels],
            "ids": list(prefix.input_ids),
            "images": [im.digest for im in prefix.images],
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    # -- scoring --------------------------------------------------------------------------------

    def logits(self, pairs: Sequence[tuple[_QueryLike, _CandidateLike]], *, fast: bool = False) -> torch.Tensor:
        """logit(yes) - logit(no) of each pair [batch], float32, with gradients: what training optimizes is
        exactly what the fast path serves.

        ``fast=False`` computes the reference definition of the current configuration. ``fast=True`` (vision-first
        configurations) computes the same numbers as serving does: each distinct prefix up to the band end only,
        each distinct suffix's pre-band layers once, the per-pair layers last. Training uses it: same loss, less
        work; a test holds both paths and their gradients equal.
        """
        pairs = _pair_list(pairs)
        with self._lock:
            cfg = self._config  # one configuration for the whole step
        sides = self._prepare_pairs(pairs, cfg)
        cache: dict = {}
        unique = list({im.digest: im for q, d in sides for im in (*q.images, *d.images)}.values())
        for image, feats in zip(unique, self.backbone.encode_images(unique)):  # one vision call per step
            cache[(id(self.backbone), image.digest)] = feats
        self.counters.vision_encodings += len(unique)
        if cfg.keep_ratio < 1.0:
            self._prefetch_importances(unique, cache, cfg)
        if cfg.format == "query_first":
            segments = [(self._query_first(q, d, cfg), None) for q, d in sides]
        else:
            segments = [self._vision_first(q, d, cfg=cfg) for q, d in sides]
        if fast and cfg.format == "vision_first":
            return self._fast_logits(segments, cache, cfg)  # type: ignore[arg-type]
        prefixes = [self._states(p, cache, cfg) for p, _ in segments]
        suffixes = [
            self._states(s, cache, cfg).shifted(p.next_position)
            if s is not None
            else p.select(torch.zeros_like(p.visual))
            for p, (_, s) in zip(prefixes, segments)
        ]
        head, prefixes = cut_shared_start([p for p, _ in segments], prefixes, self.backbone.image_token_id)
        return reference_logits(self.backbone, prefixes, suffixes, cfg.band, cfg.exit_layer, shared=head)

    def _fast_logits(self, segments: list[tuple[Segment, Segment]], cache: dict, cfg: RerankConfig) -> torch.Tensor:
        """The serving computation of :meth:`_score_sides`, batched and differentiable, without the store."""
        b = self.backbone
        distinct_prefixes, rows_p = distinct_segments([p for p, _ in segments])
        distinct_suffixes, rows_s = distinct_segments([s for _, s in segments])
        prefix_states = [self._states(p, cache, cfg) for p in distinct_prefixes]
        head, cut = cut_shared_start(distinct_prefixes, prefix_states, b.image_token_id)
        entries = compute_prefixes(b, cut, cfg.band, shared=head)
        suffix_states = [self._states(s, cache, cfg) for s in distinct_suffixes]
        prebands = [compute_suffix_preband(b, s, cfg.band[0]) for s in suffix_states]
        return pair_logits(
            b,
            [entries[i] for i in rows_p],
            [suffix_states[j].shifted(entries[i].next_position) for i, j in zip(rows_p, rows_s)],
            [prebands[j] for j in rows_s],
            cfg.band,
            cfg.exit_layer,
        )

    @torch.no_grad()
    def _compute_prefix(
        self, prefix: Segment, cache: dict | None = None, cfg: RerankConfig | None = None
    ) -> PrefixEntry:
        cfg = cfg or self._config
        self.counters.prefix_computations += 1
        return compute_prefix(self.backbone, self._states(prefix, cache, cfg), cfg.band)

    @torch.no_grad()
    def _score_sides(self, pairs: list[tuple[SideContent, SideContent]], cfg: RerankConfig) -> list[float]:
        if not pairs:
            return []
        cache: dict = {}  # vision features of this call, by (backbone, digest)
        logits: list[torch.Tensor] = []  # kept on the device: one transfer at the end, no sync per batch
        if cfg.format == "query_first":
            for start in range(0, len(pairs), cfg.batch_size):
                chunk = pairs[start : start + cfg.batch_size]
                states = [self._states(self._query_first(q, d, cfg), cache, cfg) for q, d in chunk]
                self.counters.single_passes += len(chunk)
                logits.append(single_segment_logits(self.backbone, states, cfg.exit_layer))
            return torch.sigmoid(torch.cat(logits)).tolist()

        # Plan: each distinct prefix once (store, then compute), each distinct suffix's pre-band once. Entries are
        # fetched a window of pairs at a time, the next window on a reader thread while this one is scored, and
        # dropped after their last pair, so a query over many documents holds at most two windows' entries.
        plans = []
        suffixes: dict[tuple, tuple[SegmentStates, torch.Tensor]] = {}
        prefixes: dict[str, Segment] = {}
        for q, d in pairs:
            prefix, suffix = self._vision_first(q, d, cfg=cfg)
            key = self._prefix_key(prefix, cfg)
            prefixes.setdefault(key, prefix)
            suffix_key = segment_key(suffix)
            if suffix_key not in suffixes:
                states = self._states(suffix, cache, cfg)
                self.counters.suffix_prebands += 1
                suffixes[suffix_key] = (states, compute_suffix_preband(self.backbone, states, cfg.band[0]))
            plans.append((key, suffix_key))
        last_use = {key: i for i, (key, _) in enumerate(plans)}
        window = max(cfg.batch_size, _FETCH_WINDOW)
        starts = range(0, len(plans), window)
        seen: set[str] = set()
        fetches = []  # per window, the keys it needs that no earlier window brought (those are still held)
        for start in starts:
            fetches.append([k for k in dict.fromkeys(k for k, _ in plans[start : start + window]) if k not in seen])
            seen.update(fetches[-1])
        entries: dict[str, PrefixEntry] = {}  # a key leaves after its last pair, and never comes back
        with closing(_read_ahead(self.store.get_many, fetches)) as reads:  # closed at once, even on an error
            for w, (window_start, fetched) in enumerate(zip(starts, reads)):
                window_end = window_start + window
                for key, entry in zip(fetches[w], fetched):
                    if entry is None:
                        entry = self._compute_prefix(prefixes[key], cache, cfg)
                        self.store.put(key, entry)
                    else:
                        self.counters.prefix_hits += 1
                    entries[key] = entry
                for start in range(window_start, min(window_end, len(plans)), cfg.batch_size):
                    chunk = plans[start : min(start + cfg.batch_size, window_end)]
                    batch_entries = [entries[k] for k, _ in chunk]
                    batch_states = [suffixes[s][0].shifted(e.next_position) for (_, s), e in zip(chunk, batch_entries)]
                    prebands = [suffixes[s][1] for _, s in chunk]
                    self.counters.pair_passes += len(chunk)
                    logits.append(
                        pair_logits(self.backbone, batch_entries, batch_states, prebands, cfg.band, cfg.exit_layer)
                    )
                for key in [k for k in entries if last_use[k] < window_end]:
                    del entries[key]
        return torch.sigmoid(torch.cat(logits)).tolist()


def _read_ahead(fetch: Callable[[list[str]], list], batches: list[list[str]]) -> Iterator[list]:
    """Yields ``fetch(batch)`` for each batch in turn (``[]`` for an empty one). With more than one batch the
    reads run on a reader thread one batch ahead: while the caller scores batch ``w``, ``w + 1`` is read."""

    def read(batch: list[str]) -> list:
        return fetch(batch) if batch else []

    if len(batches) <= 1:
        yield from map(read, batches)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="minirerank-prefetch") as pool:
        pending = pool.submit(read, batches[0])
        for batch in batches[1:]:
            current = pending.result()
            pending = pool.submit(read, batch)
            yield current
        yield pending.result()


def _check_encodable(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates, e.g. from a bad decode
        raise InputError(
            f"{what}'s text cannot be encoded as UTF-8 ({exc.reason} at position {exc.start}: "
            f"{text[exc.start : exc.end]!r})"
        ) from exc


def _check_top_n(top_n: object) -> None:
    if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 0):
        raise InputError(f"top_n must be an int >= 0 or None, got {top_n!r}")


def _check_on_error(on_error: object) -> None:
    if on_error not in ("raise", "skip"):
        raise InputError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


def _not_a_list(items: object, what: str, expected: str) -> None:
    # A str, bytes or dict is iterable too, and would be read item by item (each character a candidate).
    if isinstance(items, (str, bytes, bytearray, memoryview, Mapping, Query, Candidate)):
        raise InputError(f"{what} takes a list of {expected}, got a {type(items).__name__}: wrap it in a list")
    if not isinstance(items, Iterable):
        raise InputError(f"{what} takes a list of {expected}, got {type(items).__name__}")


def _candidate_list(candidates: object, what: str) -> list:
    _not_a_list(candidates, what, "candidates")
    return list(candidates)  # type: ignore[call-overload]


def _pair_list(pairs: object) -> list:
    _not_a_list(pairs, "score", "(query, candidate) pairs")
    checked = list(pairs)  # type: ignore[call-overload]
    for index, pair in enumerate(checked):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            shown = f"{type(pair).__name__} of {len(pair)}" if isinstance(pair, (tuple, list)) else type(pair).__name__
            raise InputError(f"pair {index} must be a (query, candidate) tuple, got {shown}")
    return checked


def unvalidated_parts(config: RerankConfig, saved: RerankConfig | None, depth: int) -> list[str]:
    """The fast parts of ``config`` that ``saved`` (the configuration a checkpoint was adapted to or
    calibrated for; None when it has none) does not vouch for: each technique whose setting differs from
    the saved one. Empty for the dense computation and for the saved configuration itself."""
    config, reference = config.resolve(depth), (saved or RerankConfig(format="query_first")).resolve(depth)
    parts = []
    if config.format == "vision_first" and (reference.format != "vision_first" or config.band != reference.band):
        parts.append(f"vision-first prompt with band {list(config.band or ())}")
    if config.exit_layer != reference.exit_layer and config.exit_layer != depth:
        parts.append(f"exit after layer {config.exit_layer} of {depth}")
    if config.keep_ratio < 1 and (
        config.keep_ratio != reference.keep_ratio
        or config.pruning_guide != reference.pruning_guide
        or config.pruning_guide_layers != reference.pruning_guide_layers
    ):
        parts.append(f"visual-token pruning (keep {config.keep_ratio}, {config.pruning_guide}-guided)")
    return parts


def _warn_unvalidated(name: str, parts: list[str], has_saved: bool) -> None:
    where = (
        f"{CONFIG_FILE} of {name} was saved for another configuration" if has_saved else f"{name} has no {CONFIG_FILE}"
    )
    logger.warning(
        "%s: serving a fast configuration whose quality on this checkpoint was not validated (%s). Without "
        "adaptation such configurations can lose most of the ranking quality (the demo model keeps 0.05 of dense "
        "Hit@1 under the zero-shot paper preset). Adapt it with `minirerank adapt --model %s --data GROUPS --out "
        "DIR`, then choose and save a configuration with `minirerank calibrate --model DIR --data VALIDATION`; "
        "or load with config='dense'.",
        where,
        "; ".join(parts),
        name,
    )


def _saved_embedder(folder: Path) -> str | None:
    """The pruning embedder ``minirerank adapt`` trained the folder's configuration with, if it names one."""
    record = folder / ADAPT_FILE
    if not record.is_file():
        return None
    try:
        embedder = json.loads(record.read_text(encoding="utf-8")).get("embedder")
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{record}: not a readable adaptation record ({exc})") from exc
    if not embedder:
        return None
    path = Path(embedder)
    if not path.is_absolute() and not path.exists() and (folder / path).exists():
        return str(folder / path)
    return str(embedder)


def _saved_config(folder: Path) -> RerankConfig | None:
    """The configuration a checkpoint folder says it was adapted to, if it says one."""
    saved = folder / CONFIG_FILE
    if not saved.is_file():
        return None
    try:
        return RerankConfig.model_validate_json(saved.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:  # pydantic's ValidationError is a ValueError
        raise ConfigError(f"{saved}: not a valid RerankConfig ({exc})") from exc
