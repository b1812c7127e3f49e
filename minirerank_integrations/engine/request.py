"""One rerank request (a query, its candidates, ``top_n``, ``on_error``) and its preparation: each side read
and checked before the model is taken, with everything that goes wrong with one candidate kept as that
candidate's error (``on_error="skip"`` covers it)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..errors import CandidateError, InputError, MiniRerankError
from .config import RerankConfig
from .inputs import Candidate, OnError, Query, SkippedCandidate, as_candidate, as_query
from .prompts import SideContent
from .sides import candidate_list, check_on_error, check_top_n

__all__ = ["PreparedRequest", "RerankRequest", "candidate_error", "prepare_request"]

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


def candidate_error(index: int, exc: Exception, candidate_id: str | None) -> CandidateError:
    """``exc``, raised while preparing candidate ``index``, as that candidate's error: the project's own errors
    as they are, anything else (a malformed object's TypeError, an overflow) as an :class:`InputError`."""
    cause = exc if isinstance(exc, MiniRerankError) else InputError(f"{type(exc).__name__}: {exc}")
    error = CandidateError(index, cause, candidate_id)
    error.__cause__ = exc
    return error
