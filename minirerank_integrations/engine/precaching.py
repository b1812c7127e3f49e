"""``precache``: document-side prefixes computed and stored ahead of queries, one outcome per document."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from tqdm.auto import tqdm

from ..errors import InputError
from ..store import PrefixEntry, PrefixStore
from .config import RerankConfig
from .inputs import Candidate, OnError, as_candidate
from .precache_report import PrecacheOutcome, PrecacheReport, kept_by_store
from .prompts import Segment, SideContent
from .request import Prepare, candidate_error

__all__ = ["precache_documents"]


def precache_documents(
    items: Sequence[str | Candidate],
    cfg: RerankConfig,
    *,
    prepare: Prepare,
    document_prefix: Callable[[SideContent, RerankConfig], tuple[str, Segment]],
    compute: Callable[[Segment, RerankConfig], PrefixEntry],
    store: PrefixStore,
    lock: threading.RLock,
    progress: bool,
    on_error: OnError,
) -> PrecacheReport:
    """Each document read outside ``lock``, then, under it, its prefix's key looked up in ``store`` and, when
    absent, the prefix computed and stored; every prefix keyed and computed under ``cfg``. A bad document raises
    its :class:`~..errors.CandidateError` (``on_error="raise"``; what came before it is stored) or is skipped."""
    if cfg.format != "vision_first" or cfg.prefix_side == "query":
        raise InputError("precache needs format='vision_first' with the document side as prefix")
    outcomes: list[PrecacheOutcome] = []
    for index, raw in enumerate(tqdm(items, disable=not progress, desc="precache", unit="doc")):
        candidate_id = raw.id if isinstance(raw, Candidate) else None
        try:
            side = prepare(as_candidate(raw), f"candidate {index}", cfg)
        except Exception as exc:  # whatever one candidate raises is that candidate's error (skip covers it)
            error = candidate_error(index, exc, candidate_id)
            if on_error == "raise":
                raise error from exc
            outcomes.append(PrecacheOutcome(index, candidate_id, "skipped", str(error.cause), error=error))
            continue
        with lock:
            key, prefix = document_prefix(side, cfg)
            if key in store:
                outcomes.append(PrecacheOutcome(index, candidate_id, "present", key=key))
                continue
            entry = compute(prefix, cfg)
            store.put(key, entry)
        outcomes.append(PrecacheOutcome(index, candidate_id, "stored", key=key, bytes=entry.nbytes()))
    return kept_by_store(outcomes, store)
