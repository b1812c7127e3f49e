"""One rerank request (a query, its candidates, ``top_n``, ``on_error``) and its preparation: each side read
and checked before the model is taken, with everything that goes wrong with one candidate kept as that
candidate's error (``on_error="skip"`` covers it)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..errors import CallCancelled, CandidateError, InputError, MiniRerankError
from .config import RerankConfig
from .inputs import Candidate, OnError, Query, RerankResult, RerankResults, SkippedCandidate, as_candidate, as_query
from .prompts import SideContent
from .sides import candidate_list, check_on_error, check_top_n

__all__ = [
    "PreparedRequest",
    "RerankRequest",
    "abandoned_rows",
    "candidate_error",
    "merged_pairs",
    "prepare_pairs",
    "prepare_request",
    "request_results",
]

logger = logging.getLogger(__name__)

#: ``prepare(item, what, cfg, side=...)``: one side read and checked (:meth:`MiniReranker.prepare`).
Prepare = Callable[..., SideContent]


@dataclass(frozen=True)
class RerankRequest:
    """One :meth:`MiniReranker.rerank` call's arguments, for :meth:`MiniReranker.rerank_many`."""

    query: str | Query
    candidates: Sequence[str | Candidate] = field(default_factory=tuple)
    top_n: int | None = None
    on_error: OnError = "raise"


@dataclass
class PreparedRequest:
    """A request's prepared sides (candidate index, id, side), its skipped candidates, or the error that ends it."""

    kept: list[tuple[int, str | None, SideContent]] = field(default_factory=list)
    query: SideContent | None = None
    skipped: list[SkippedCandidate] = field(default_factory=list)
    error: MiniRerankError | None = None


def prepare_request(prepare: Prepare, request: RerankRequest, cfg: RerankConfig) -> PreparedRequest:
    """Prepare ``request``'s sides; its own errors are kept in the result, not raised."""
    try:
        check_top_n(request.top_n)
        check_on_error(request.on_error)
        candidates = candidate_list(request.candidates, "rerank")
        query = prepare(as_query(request.query), "the query", cfg, side="query")
    except MiniRerankError as exc:
        return PreparedRequest(error=exc)
    prepared = PreparedRequest(query=query)
    for index, raw in enumerate(candidates):
        candidate_id = raw.id if isinstance(raw, Candidate) else None
        try:
            prepared.kept.append((index, candidate_id, prepare(as_candidate(raw), f"candidate {index}", cfg)))
        except Exception as exc:  # whatever one candidate raises is that candidate's error (skip covers it)
            error = candidate_error(index, exc, candidate_id)
            if request.on_error == "raise":
                return PreparedRequest(error=error)
            logger.warning("skipping %s", error)
            prepared.skipped.append(SkippedCandidate(index, str(error.cause), candidate_id))
    return prepared


def prepare_pairs(
    prepare: Prepare, pairs: Sequence[tuple[str | Query, str | Candidate]], cfg: RerankConfig
) -> list[tuple[SideContent, SideContent]]:
    """Each (query, candidate) pair's sides; a bad candidate raises :class:`CandidateError` naming its index."""
    prepared = []
    for index, (query, candidate) in enumerate(pairs):
        candidate_id = candidate.id if isinstance(candidate, Candidate) else None
        # A bad query is the query's error, named as such; only the candidate's own become CandidateError.
        q = prepare(as_query(query), f"the query of pair {index}", cfg, side="query")
        try:
            prepared.append((q, prepare(as_candidate(candidate), f"candidate {index}", cfg)))
        except MiniRerankError as exc:
            raise CandidateError(index, exc, candidate_id) from exc
    return prepared


def candidate_error(index: int, exc: Exception, candidate_id: str | None) -> CandidateError:
    """``exc``, raised while preparing candidate ``index``, as that candidate's error: the project's own errors
    as they are, anything else (a malformed object's TypeError, an overflow) as an :class:`InputError`."""
    cause = exc if isinstance(exc, MiniRerankError) else InputError(f"{type(exc).__name__}: {exc}")
    error = CandidateError(index, cause, candidate_id)
    error.__cause__ = exc
    return error


Items = Sequence[tuple[RerankRequest, PreparedRequest]]


def merged_pairs(items: Items) -> tuple[list[tuple[SideContent, SideContent]], list[int]]:
    """The (query, candidate) pairs of every request prepared without an error, in order, and each pair's
    request number: the pairs one plan scores for all of them."""
    pairs: list[tuple[SideContent, SideContent]] = []
    owner: list[int] = []
    for number, (_, p) in enumerate(items):
        if p.error is None:
            assert p.query is not None  # prepared without an error: a query
            pairs += [(p.query, side) for _, _, side in p.kept]
            owner += [number] * len(p.kept)
    return pairs, owner


def abandoned_rows(
    pair_rows: Sequence[int], rows: int, owner: Sequence[int], gone: Sequence[threading.Event]
) -> Callable[[], set[int]]:
    """Asked between batches: the plan rows no request still wants (each pair ``k`` is row ``pair_rows[k]`` of
    ``rows`` and belongs to request ``owner[k]``, whose caller left once ``gone[owner[k]]`` is set). A row
    another request still wants is kept."""

    def dropped() -> set[int]:
        if not any(event.is_set() for event in gone):
            return set()
        wanted = {pair_rows[k] for k, number in enumerate(owner) if not gone[number].is_set()}
        return set(range(rows)) - wanted

    return dropped


def request_results(
    items: Items, scores: dict[int, float], gone: Sequence[threading.Event]
) -> list[RerankResults | MiniRerankError]:
    """Each request's answer from the merged pairs' ``scores`` (by pair position, as :func:`merged_pairs` lists
    them): its results best first (ties in input order) cut to ``top_n``, its own error, or
    :class:`CallCancelled` when its caller left."""
    out: list[RerankResults | MiniRerankError] = []
    position = 0
    for number, (request, p) in enumerate(items):
        if p.error is not None:
            out.append(p.error)
            continue
        first, position = position, position + len(p.kept)
        if gone[number].is_set():
            out.append(CallCancelled("the request was abandoned; its pairs were dropped from the batches left"))
            continue
        results = [RerankResult(index, scores[k], cid) for k, (index, cid, _) in enumerate(p.kept, first)]
        results.sort(key=lambda r: (-r.score, r.index))
        out.append(RerankResults(results if request.top_n is None else results[: request.top_n], p.skipped))
    return out
