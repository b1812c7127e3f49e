"""Running a :class:`CallPlan`: each distinct prefix read from the store or computed (and stored), each distinct
suffix's pre-band layers once, then the per-pair layers in batches (``docs/design.md``, "The computation plan").

Entries are fetched a window of pairs at a time, the next window on a reader thread while this one is scored,
and dropped after their last pair, so a query over many documents holds at most two windows' entries.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing

import torch

from ..errors import CallCancelled, ConfigError, ScoreError
from ..store import PrefixEntry, PrefixStore
from .config import RerankConfig
from .encoder import FeatureCache, SegmentEncoder
from .layers import (
    compute_prefix,
    compute_prefixes,
    compute_suffix_preband,
    pair_logits,
    reference_logits,
    single_segment_logits,
)
from .modeling import Backbone, SegmentStates
from .plan import CallPlan, cut_shared_start, distinct_segments, pair_segments
from .prompts import Segment, SideContent

__all__ = [
    "FETCH_WINDOW",
    "MAX_BATCH_WORKERS",
    "CallCancelled",
    "batch_workers",
    "finite_scores",
    "compute_prefix_entry",
    "plan_logits",
    "trainable_logits",
]


#: Pairs whose prefixes one store lookup fetches. The next window is fetched (read, checked, decoded) on a
#: reader thread while this one is scored, so only the first window's read is not hidden behind compute; two
#: windows of entries are held at most.
FETCH_WINDOW = 32
#: Most batches scored at once on the CPU (each holds its entries and activations).
MAX_BATCH_WORKERS = 4


def _band_and_exit(cfg: RerankConfig) -> tuple[tuple[int, int], int]:
    """The band and exit layer of a resolved configuration (``RerankConfig.resolve`` fills them)."""
    if cfg.band is None or cfg.exit_layer is None:
        raise ConfigError(
            f"the configuration is not resolved for a model's depth (band {cfg.band}, exit {cfg.exit_layer})"
        )
    return cfg.band, cfg.exit_layer


@torch.no_grad()
def compute_prefix_entry(
    encoder: SegmentEncoder, prefix: Segment, plan_config: RerankConfig, cache: FeatureCache | None = None
) -> PrefixEntry:
    """The stored form of ``prefix``: its band layers' keys and values (a store miss)."""
    encoder.counters.prefix_computations += 1
    band, _ = _band_and_exit(plan_config)
    return compute_prefix(encoder.backbone, encoder.states(prefix, plan_config, cache), band)


@torch.no_grad()
def plan_logits(
    plan: CallPlan,
    encoder: SegmentEncoder,
    store: PrefixStore,
    cancelled: threading.Event | None = None,
    dropped: Callable[[], set[int]] | None = None,
    *,
    workers: int | None = None,
) -> torch.Tensor:
    """logit(yes) - logit(no) of each pair of ``plan`` [pairs], float32, on the model's device.

    Vision-first batches are scored on ``workers`` threads at once (None: :func:`batch_workers`), each batch as
    it would be alone, so the scores do not depend on it; the batches after one in flight are formed while it runs.

    ``cancelled``, when given, is checked between batches: once it is set the call stops with
    :class:`CallCancelled` (an abandoned ``arerank`` costs at most the batches in flight: one per worker, and one
    more queued when there are several). ``dropped``, when given, names the rows no longer wanted (their callers
    left), asked before each batch: those rows are left out of the batches not yet run and their logits are NaN;
    once every row is dropped the call stops as cancelled."""
    cfg, backbone, counters = plan.config, encoder.backbone, encoder.counters
    band, exit_layer = _band_and_exit(cfg)
    cache: FeatureCache = {}  # vision features of this call, by (backbone, digest)
    logits: list[torch.Tensor] = []  # kept on the device: one transfer at the end, no sync per batch
    if not len(plan):
        return torch.zeros(0)
    total = len(plan.singles) if cfg.format == "query_first" else len(plan.rows)

    def check() -> set[int]:
        """The rows to leave out of the next batch; raises once the whole call is abandoned."""
        if cancelled is not None and cancelled.is_set():
            raise CallCancelled("the call was cancelled; it stopped between batches")
        gone = dropped() if dropped is not None else set()
        if len(gone) >= total:
            raise CallCancelled("every request of the call was abandoned; it stopped between batches")
        return gone

    gone = check()
    if cfg.format == "query_first":
        for start in range(0, len(plan.singles), cfg.batch_size):
            rows = [r for r in range(start, min(start + cfg.batch_size, total)) if r not in gone]
            states = [encoder.states(plan.singles[r], cfg, cache) for r in rows]
            counters.single_passes += len(rows)
            stop = min(start + cfg.batch_size, total)
            computed = single_segment_logits(backbone, states, exit_layer) if rows else None
            logits.append(_spread(computed, rows, start, stop, backbone.device))
            gone = check()
        return _per_pair(plan, logits)

    suffixes: dict[tuple, tuple[SegmentStates, torch.Tensor]] = {}
    for suffix_key, suffix in plan.suffixes.items():
        own = encoder.states(suffix, cfg, cache)
        counters.suffix_prebands += 1
        suffixes[suffix_key] = (own, compute_suffix_preband(backbone, own, band[0]))
    moved: dict[tuple[tuple, int], SegmentStates] = {}  # a suffix after a prefix ending at a position: once

    def shifted(suffix_key: tuple, position: int) -> SegmentStates:
        if (suffix_key, position) not in moved:
            moved[suffix_key, position] = suffixes[suffix_key][0].shifted(position)
        return moved[suffix_key, position]

    last_use = plan.last_use()
    window = max(cfg.batch_size, FETCH_WINDOW)
    fetches = plan.fetch_windows(window)
    entries: dict[str, PrefixEntry] = {}  # a key leaves after its last pair, and never comes back
    missing: set[str] = set()  # store misses, computed when a wanted row first needs them: a dropped row's cost nothing
    workers = batch_workers(backbone.device) if workers is None else workers
    # Batches in flight on the scoring threads, oldest first: (its logits to come, its rows, start, stop).
    in_flight: deque[tuple[Future[torch.Tensor | None], list[int], int, int]] = deque()

    def collect_oldest() -> None:
        future, rows, start, stop = in_flight.popleft()
        logits.append(_spread(future.result(), rows, start, stop, backbone.device))

    scorers = _scoring_threads(workers) if workers > 1 else None
    try:
        with closing(_read_ahead(store.get_many, fetches)) as reads:  # closed at once, even on an error
            for w, fetched in enumerate(reads):
                window_start, window_end = w * window, (w + 1) * window
                for key, entry in zip(fetches[w], fetched):
                    if entry is None:
                        missing.add(key)
                    else:
                        counters.prefix_hits += 1
                        entries[key] = entry
                for start in range(window_start, min(window_end, len(plan.rows)), cfg.batch_size):
                    stop = min(start + cfg.batch_size, window_end, len(plan.rows))
                    rows = [r for r in range(start, stop) if r not in gone]
                    for key in dict.fromkeys(plan.rows[r][0] for r in rows):
                        if key in missing:
                            missing.discard(key)
                            entries[key] = compute_prefix_entry(encoder, plan.prefixes[key], cfg, cache)
                            store.put(key, entries[key])
                    chunk = [plan.rows[r] for r in rows]
                    batch_entries = [entries[k] for k, _ in chunk]
                    batch_states = [shifted(s, e.next_position) for (_, s), e in zip(chunk, batch_entries)]
                    prebands = [suffixes[s][1] for _, s in chunk]
                    counters.pair_passes += len(chunk)
                    args = (backbone, batch_entries, batch_states, prebands, band, exit_layer)
                    if scorers is None:
                        logits.append(_spread(_batch_logits(*args), rows, start, stop, backbone.device))
                        gone = check()
                        continue
                    in_flight.append((scorers.submit(_batch_logits, *args), rows, start, stop))
                    # One batch queued beyond the threads: a thread that finishes takes it at once instead of
                    # waiting while this thread forms the next one. More queued, wait for the oldest.
                    if len(in_flight) > workers:
                        collect_oldest()
                        gone = check()
                # The batches in flight hold their own entries: a key dropped here stays alive until they finish.
                for key in [k for k in entries if last_use[k] < window_end]:
                    del entries[key]
            while in_flight:
                collect_oldest()
                gone = check()
    finally:
        for future, *_ in in_flight:  # an error or a cancellation: batches not started are not run
            future.cancel()
        for future, *_ in in_flight:  # and those running finish before their entries and states go
            if not future.cancelled():
                future.exception()
    return _per_pair(plan, logits)


def batch_workers(device: torch.device) -> int:
    """How many batches :func:`plan_logits` scores at once on ``device``: on the CPU with one torch intra-op thread
    (``torch.set_num_threads(1)``, as a server sharing its cores with HTTP work runs), one per core, at most
    :data:`MAX_BATCH_WORKERS`: torch releases the GIL inside its kernels, so the batches' forwards run on several
    cores. Else one: torch's own threads already use the cores, and an accelerator's kernels queue on one stream."""
    if device.type != "cpu" or torch.get_num_threads() > 1:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, MAX_BATCH_WORKERS))


_pools: dict[tuple[int, str, int], ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _threads(name: str, count: int) -> ThreadPoolExecutor:
    """A pool of ``count`` threads named ``name``, kept for the process: a thread's start (and its first torch
    call's intra-op setup) is paid once, not on every call. Keyed by process id too: a forked child has none of
    its parent's threads, and a pool it inherited would never run what it is given."""
    key = (os.getpid(), name, count)
    with _pools_lock:
        if key not in _pools:
            _pools[key] = ThreadPoolExecutor(count, thread_name_prefix=name)
        return _pools[key]


def _scoring_threads(workers: int) -> ThreadPoolExecutor:
    """The threads :func:`plan_logits` scores batches on."""
    return _threads("minirerank-batch", workers)


def _batch_logits(
    backbone: Backbone,
    entries: list[PrefixEntry],
    states: list[SegmentStates],
    prebands: list[torch.Tensor],
    band: tuple[int, int],
    exit_layer: int,
) -> torch.Tensor | None:
    """:func:`pair_logits` of one batch on a scoring thread (grad mode is per thread: off here too); None when
    every row of the batch was left out."""
    if not entries:
        return None
    with torch.no_grad():
        return pair_logits(backbone, entries, states, prebands, band, exit_layer)


def _spread(
    computed: torch.Tensor | None, rows: list[int], start: int, stop: int, device: torch.device
) -> torch.Tensor:
    """The logits of rows ``start..stop-1`` [stop - start]: ``computed`` for ``rows`` (the wanted ones, in order),
    NaN for the rows left out."""
    if computed is not None and len(rows) == stop - start:
        return computed
    out = torch.full((stop - start,), float("nan"), dtype=torch.float32, device=device)
    if computed is not None:
        out[torch.tensor(rows, device=computed.device) - start] = computed.float()
    return out


def _per_pair(plan: CallPlan, row_logits: list[torch.Tensor]) -> torch.Tensor:
    """Each pair's logit from its row's [pairs]; a repeated pair reads its row's (an exact copy)."""
    rows = torch.cat(row_logits)  # [rows]
    return rows[torch.tensor(plan.pair_rows, device=rows.device)]


def trainable_logits(
    encoder: SegmentEncoder, sides: Sequence[tuple[SideContent, SideContent]], cfg: RerankConfig, *, fast: bool
) -> torch.Tensor:
    """logit(yes) - logit(no) of each prepared pair [pairs], float32 and differentiable, without the store.

    ``fast=False``: the reference definition (each whole pair through the naive per-layer-masked loop).
    ``fast=True`` (vision-first): the serving computation of :func:`plan_logits`, batched: each distinct prefix
    up to the band end, each distinct suffix's pre-band layers once, the per-pair layers last.
    """
    b = encoder.backbone
    band, exit_layer = _band_and_exit(cfg)
    cache: FeatureCache = {}
    images = [im for q, d in sides for im in (*q.images, *d.images)]
    encoder.encode_all(images, cache)  # one vision call per step
    if cfg.keep_ratio < 1.0:
        encoder.prefetch_importances(list({im.digest: im for im in images}.values()), cache, cfg)
    segments = [pair_segments(b, q, d, cfg) for q, d in sides]
    if not fast or cfg.format != "vision_first":
        states = [encoder.states(p, cfg, cache) for p, _ in segments]
        suffixes = [
            encoder.states(s, cfg, cache).shifted(p.next_position) if s is not None else p.select(p.visual & False)
            for p, (_, s) in zip(states, segments)
        ]
        head, states = cut_shared_start([p for p, _ in segments], states, b.image_token_id)
        return reference_logits(b, states, suffixes, band, exit_layer, shared=head)
    distinct_prefixes, rows_p = distinct_segments([p for p, _ in segments])
    distinct_suffixes, rows_s = distinct_segments([s for _, s in segments if s is not None])
    assert len(rows_s) == len(segments), "every vision-first pair has a suffix"
    prefix_states = [encoder.states(p, cfg, cache) for p in distinct_prefixes]
    head, cut = cut_shared_start(distinct_prefixes, prefix_states, b.image_token_id)
    entries = compute_prefixes(b, cut, band, shared=head)
    suffix_states = [encoder.states(s, cfg, cache) for s in distinct_suffixes]
    prebands = [compute_suffix_preband(b, s, band[0]) for s in suffix_states]
    return pair_logits(
        b,
        [entries[i] for i in rows_p],
        [suffix_states[j].shifted(entries[i].next_position) for i, j in zip(rows_p, rows_s)],
        [prebands[j] for j in rows_s],
        band,
        exit_layer,
    )


def _read_ahead(fetch: Callable[[list[str]], list], batches: list[list[str]]) -> Generator[list, None, None]:
    """Yields ``fetch(batch)`` for each batch in turn (``[]`` for an empty one). With more than one batch the
    reads run on a reader thread one batch ahead: while the caller scores batch ``w``, ``w + 1`` is read."""

    def read(batch: list[str]) -> list:
        return fetch(batch) if batch else []

    if len(batches) <= 1:
        yield from map(read, batches)
        return
    readers = _threads("minirerank-prefetch", _READERS)
    pending = readers.submit(read, batches[0])
    try:
        for batch in batches[1:]:
            current = pending.result()
            pending = readers.submit(read, batch)
            yield current
        yield pending.result()
    finally:  # closed early (an error, a cancellation): the read in flight ends with the call
        if not pending.cancel():
            pending.exception()


#: Reader threads of :func:`_read_ahead`, kept for the process (a thread started per call cost ~0.25 ms); a call
#: has one read in flight at a time, so four serve four calls at once.
_READERS = 4


def finite_scores(logits: torch.Tensor, pair_indices: Sequence[int]) -> list[float]:
    """sigmoid of each logit; a non-finite logit fails the call, naming its pair."""
    bad = (~torch.isfinite(logits)).nonzero().flatten().tolist()
    if bad:
        named = ", ".join(str(pair_indices[i]) for i in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise ScoreError(
            f"the score of pair(s) {named} is not finite (NaN or inf): the model overflowed in its dtype; load it "
            "in float32 or bfloat16 (float16 overflows on large activations)"
        )
    return torch.sigmoid(logits).tolist()
