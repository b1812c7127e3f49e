"""The endpoints' work: wire requests (:mod:`.protocol`) to engine requests (:mod:`.inputs`), handed to the
micro-batcher (:mod:`.batcher`), and results back to wire responses. A request waits for its batch within the
request timeout; a timeout or a disconnect abandons it (its share of a running batch is dropped)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable
from typing import Any

from fastapi import Request

from .. import Candidate, RerankRequest, RerankResults
from ..errors import CandidateError, MiniRerankError
from .batcher import QueueFull
from .errors import ServeError
from .inputs import Side, as_candidate, as_query, convert
from .protocol import (
    Content,
    Item,
    PrecacheOutcome,
    PrecacheRequest,
    PrecacheResponse,
    RerankResponse,
    RerankResultItem,
    ReturnedDocument,
    ScoreData,
    ScoreRequest,
    ScoreResponse,
    SkippedItem,
    TextItem,
    TextPart,
    Usage,
)
from .protocol import RerankRequest as WireRerankRequest
from .service import Service

__all__ = ["precache", "rerank", "score", "timed"]


async def timed(service: Service, endpoint: str, work: Awaitable[Any]) -> Any:
    start = time.perf_counter()
    status = 200
    try:
        return await work
    except ServeError as exc:
        status = exc.status
        raise
    except Exception:
        status = 500
        raise
    finally:
        service.metrics.requests.labels(endpoint, str(status)).inc()
        service.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)


def _check_model(service: Service, model: str | None) -> None:
    if model is not None and model != service.settings.model_name:
        raise ServeError(
            404,
            f"model {model!r} is not served here; this server serves {service.settings.model_name!r}",
            param="model",
            kind="model_not_found",
        )


def _convert_all(service: Service, query: Item, documents: list[Item]) -> tuple[Side, list[Side], list[int]]:
    """Runs on a worker thread: base64 decoding, header reads and tokenizing stay off the event loop."""
    q = convert(query, "query", service.settings, service.policy)
    docs = [convert(d, f"documents[{i}]", service.settings, service.policy) for i, d in enumerate(documents)]
    counts = service.count_tokens([q.text, *(d.text for d in docs)])
    return q, docs, counts


async def _run(service: Service, request: Request, query: Side, docs: list[Side], on_error: str) -> RerankResults:
    """Admit one engine request, wait for its batch within the request timeout, and give up (dropping the work
    if its batch has not started) when the client disconnects."""
    _, batcher = service.ready()
    engine_request = RerankRequest(as_query(query), [as_candidate(d) for d in docs], None, on_error)  # type: ignore[arg-type]
    try:
        job = batcher.submit(engine_request, len(docs))
    except QueueFull:
        raise ServeError(
            503,
            f"the server is at capacity ({service.settings.max_queue} requests queued); retry later",
            kind="overloaded",
            headers={"Retry-After": str(service.settings.retry_after_s)},
        ) from None
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait(
            {job.future, gone}, timeout=service.settings.request_timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        if job.future in done:
            return job.future.result()
        if gone in done:
            raise ServeError(499, "the client disconnected", kind="client_closed")
        raise ServeError(
            504,
            f"the request took longer than {service.settings.request_timeout_s} s (--request-timeout)",
            kind="timeout",
        )
    except CandidateError as exc:
        raise ServeError(422, f"documents[{exc.index}]: {exc.cause}", param=f"documents[{exc.index}]") from exc
    except MiniRerankError as exc:
        raise ServeError(422, str(exc), param="query" if "query" in str(exc) else None) from exc
    finally:
        gone.cancel()
        if not job.future.done():
            batcher.abandon(job)


async def _disconnected(request: Request) -> None:
    # The body was read already, so the next message the server sends is the client's disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _returned(item: Item) -> ReturnedDocument:
    if isinstance(item, str):
        return ReturnedDocument(text=item)
    if isinstance(item, TextItem):
        return ReturnedDocument(text=item.text)
    assert isinstance(item, Content)
    texts = [p.text for p in item.content if isinstance(p, TextPart)]
    return ReturnedDocument(text="\n".join(texts) if texts else None, content=[p.model_dump() for p in item.content])


async def rerank(service: Service, body: WireRerankRequest, request: Request) -> RerankResponse:
    _check_model(service, body.model)
    service.ready()
    _check_documents(service, len(body.documents))
    query, docs, tokens = await asyncio.to_thread(_convert_all, service, body.query, body.documents)
    results = await _run(service, request, query, docs, body.on_error)
    service.metrics.pairs.inc(len(results))
    top = results if not body.top_n else results[: body.top_n]
    used = sum(tokens[0] + tokens[1 + r.index] for r in results)
    return RerankResponse(
        id=f"rerank-{uuid.uuid4().hex}",
        model=service.settings.model_name,
        usage=Usage(prompt_tokens=used, total_tokens=used),
        results=[
            RerankResultItem(
                index=r.index,
                relevance_score=r.score,
                document=_returned(body.documents[r.index]) if body.return_documents else None,
            )
            for r in top
        ],
        skipped=[SkippedItem(index=s.index, error=s.error) for s in results.skipped]
        if body.on_error == "skip"
        else None,
    )


async def score(service: Service, body: ScoreRequest, request: Request) -> ScoreResponse:
    _check_model(service, body.model)
    service.ready()
    documents = body.text_2 if isinstance(body.text_2, list) else [body.text_2]
    _check_documents(service, len(documents), field="text_2")
    query, docs, tokens = await asyncio.to_thread(_convert_all, service, body.text_1, documents)
    results = await _run(service, request, query, docs, "raise")
    service.metrics.pairs.inc(len(results))
    used = sum(tokens[0] + t for t in tokens[1:])
    return ScoreResponse(
        id=f"score-{uuid.uuid4().hex}",
        created=int(time.time()),
        model=service.settings.model_name,
        data=[ScoreData(index=r.index, score=r.score) for r in sorted(results, key=lambda r: r.index)],
        usage=Usage(prompt_tokens=used, total_tokens=used),
    )


async def precache(service: Service, body: PrecacheRequest) -> PrecacheResponse:
    from ..scale.ingest import ingest

    engine, _ = service.ready()
    _check_documents(service, len(body.documents))
    # Converting decodes base64 and reads image headers (and fetches videos): a worker thread's work, as for rerank.
    outcomes, positions, candidates = await asyncio.to_thread(_convert_documents, service, body.documents)
    done = await asyncio.to_thread(ingest, engine, candidates, positions)
    outcomes += [PrecacheOutcome(index=o.position, status=o.status, reason=o.reason, bytes=o.bytes) for o in done]
    outcomes.sort(key=lambda o: o.index)
    count = {s: sum(o.status == s for o in outcomes) for s in ("stored", "present", "failed")}
    return PrecacheResponse(documents=len(outcomes), results=outcomes, **count)


def _convert_documents(
    service: Service, documents: list[Item]
) -> tuple[list[PrecacheOutcome], list[int], list[Candidate]]:
    """Runs on a worker thread: each document converted, or its refusal as that document's outcome."""
    outcomes: list[PrecacheOutcome] = []
    positions: list[int] = []
    candidates: list[Candidate] = []
    for index, item in enumerate(documents):
        try:
            side = convert(item, f"documents[{index}]", service.settings, service.policy)
        except ServeError as exc:  # a refused document is that document's outcome, not the request's
            outcomes.append(PrecacheOutcome(index=index, status="failed", reason=exc.message))
            continue
        positions.append(index)
        candidates.append(as_candidate(side))
    return outcomes, positions, candidates


def _check_documents(service: Service, count: int, field: str = "documents") -> None:
    limit = service.settings.max_documents
    if count > limit:
        raise ServeError(
            422,
            f"{field}: {count} documents, more than the limit of {limit} (--max-documents)",
            param=field,
            kind="too_many_documents",
        )
    if count == 0:
        raise ServeError(422, f"{field}: no documents", param=field)
