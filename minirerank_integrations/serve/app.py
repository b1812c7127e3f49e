"""The FastAPI app of ``minirerank serve``: handlers turn wire requests (:mod:`.protocol`) into engine requests
(:mod:`.inputs`), hand them to the micro-batcher (:mod:`.batcher`) and turn results back.

Endpoints: ``POST /v1/rerank`` and ``/rerank`` (vLLM's schema, which Cohere and Jina clients accept), ``POST
/v2/rerank`` (what Cohere's v2 SDK calls), ``POST /v1/score`` and ``/score``, ``POST /v1/precache``, ``GET
/v1/models``, ``GET /health`` (503 until the model is loaded) and ``GET /metrics`` (Prometheus). Every error is
``{"error": {"message", "type", "param", "code"}}``, ``param`` naming the field at fault.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import MiniReranker, RerankRequest, RerankResults
from ..errors import CandidateError, MiniRerankError
from .batcher import MicroBatcher, QueueFull
from .errors import ServeError
from .inputs import Side, as_candidate, as_query, check_pixels, convert
from .metrics import ServeMetrics
from .protocol import (
    Content,
    ErrorBody,
    ErrorResponse,
    Item,
    ModelCard,
    ModelList,
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
    Usage,
)
from .protocol import (
    RerankRequest as WireRerankRequest,
)
from .settings import ServeSettings
from .urls import URLPolicy

logger = logging.getLogger(__name__)

__all__ = ["create_app"]


class _Service:
    """What the handlers share: the engine (once loaded), the batcher, the metrics and the URL policy."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.engine: MiniReranker | None = None
        self.load_error: BaseException | None = None
        self.batcher: MicroBatcher | None = None
        self.metrics = ServeMetrics(lambda: self.engine.counters if self.engine is not None else None)
        self.policy = URLPolicy(
            allowed_hosts=settings.allowed_image_hosts,
            allow_private=settings.allow_private_addresses,
            timeout_s=settings.image_fetch_timeout_s,
            max_bytes=settings.image_fetch_max_bytes,
        )
        self.started = int(time.time())
        #: Names this server among replicas: the X-Minirerank-Instance header of every answer.
        self.instance = uuid.uuid4().hex[:12]

    def fetch_image(self, url: str) -> bytes:
        """The engine's ``image_fetcher``: the URL policy, then the pixel limit on the bytes fetched."""
        data = self.policy.fetch(url)
        check_pixels(data, f"the image at {url}", self.settings.max_image_pixels)
        return data

    def ready(self) -> tuple[MiniReranker, MicroBatcher]:
        if self.engine is None or self.batcher is None:
            why = f"the model failed to load: {self.load_error}" if self.load_error else "the model is loading"
            raise ServeError(503, why, kind="unavailable", headers={"Retry-After": str(self.settings.retry_after_s)})
        return self.engine, self.batcher

    def count_tokens(self, texts: list[str | None]) -> list[int]:
        """Text tokens of each text by the engine's tokenizer (0 for none): the usage the engine does not give.
        Images and the fixed prompt template are not counted."""
        assert self.engine is not None
        present = [t for t in texts if t]
        ids = self.engine.backbone.tokenizer(present, add_special_tokens=False)["input_ids"] if present else []
        counts = iter(ids)
        return [len(next(counts)) if t else 0 for t in texts]


def create_app(engine: MiniReranker | Callable[[], MiniReranker], settings: ServeSettings | None = None) -> ASGIApp:
    """The service (an ASGI app) over ``engine``, or over what ``engine()`` returns: that loader runs on a thread
    after the server starts, and ``/health`` answers 503 until it returns. The engine's ``image_fetcher`` is
    replaced by the service's guarded one (allowlist, address checks, size and time limits). ``app.state.service``
    holds the running state (engine, batcher, metrics)."""
    settings = settings or ServeSettings()
    service = _Service(settings)

    def install(loaded: MiniReranker) -> None:
        loaded.image_fetcher = service.fetch_image
        service.engine = loaded

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()

        def start_batcher() -> None:
            assert service.engine is not None
            batcher = MicroBatcher(service.engine, settings, service.metrics)
            batcher.start()
            service.batcher = batcher

        if isinstance(engine, MiniReranker):
            install(engine)
            start_batcher()
        else:

            def load() -> None:
                try:
                    install(engine())
                except BaseException as exc:  # reported by /health and every call
                    logger.exception("loading the model failed")
                    service.load_error = exc
                    return
                loop.call_soon_threadsafe(start_batcher)

            threading.Thread(target=load, name="minirerank-load", daemon=True).start()
        try:
            yield
        finally:
            if service.batcher is not None:
                await service.batcher.close()

    app = FastAPI(title="minirerank", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service
    _install_error_handlers(app, service)

    async def authorize(request: Request) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.api_key.encode()):
            raise ServeError(
                401,
                "missing or wrong API key: send 'Authorization: Bearer <key>'",
                param="Authorization",
                kind="authentication_error",
            )

    api = APIRouter(dependencies=[Depends(authorize)])

    @api.post("/v1/rerank", response_model=RerankResponse, response_model_exclude_none=True)
    @api.post("/rerank", response_model=RerankResponse, response_model_exclude_none=True, include_in_schema=False)
    async def rerank_v1(body: WireRerankRequest, request: Request) -> Any:
        return await _timed(service, "rerank", _rerank(service, body, request))

    @api.post("/v2/rerank", response_model=RerankResponse, response_model_exclude_none=True)
    async def rerank_v2(body: WireRerankRequest, request: Request) -> Any:
        return await _timed(service, "rerank_v2", _rerank(service, body, request))

    @api.post("/v1/score", response_model=ScoreResponse)
    @api.post("/score", response_model=ScoreResponse, include_in_schema=False)
    async def score(body: ScoreRequest, request: Request) -> Any:
        return await _timed(service, "score", _score(service, body, request))

    @api.post("/v1/precache", response_model=PrecacheResponse)
    async def precache(body: PrecacheRequest) -> Any:
        return await _timed(service, "precache", _precache(service, body))

    @api.get("/v1/models", response_model=ModelList)
    async def models() -> Any:
        engine_, _ = service.ready()
        card = ModelCard(id=settings.model_name, created=service.started, config=engine_.config.model_dump(mode="json"))
        return ModelList(data=[card])

    app.include_router(api)

    @app.get("/health")
    async def health() -> Response:
        if service.batcher is not None:
            return JSONResponse({"status": "ok", "model": settings.model_name})
        status = "failed" if service.load_error is not None else "loading"
        return JSONResponse({"status": status}, status_code=503, headers={"Retry-After": str(settings.retry_after_s)})

    @app.get("/metrics")
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return _BodyLimit(app, settings.max_body_bytes)


# -- handlers ---------------------------------------------------------------------------------------


async def _timed(service: _Service, endpoint: str, work: Awaitable[Any]) -> Any:
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


def _check_model(service: _Service, model: str | None) -> None:
    if model is not None and model != service.settings.model_name:
        raise ServeError(
            404,
            f"model {model!r} is not served here; this server serves {service.settings.model_name!r}",
            param="model",
            kind="model_not_found",
        )


def _convert_all(service: _Service, query: Item, documents: list[Item]) -> tuple[Side, list[Side], list[int]]:
    """Runs on a worker thread: base64 decoding, header reads and tokenizing stay off the event loop."""
    q = convert(query, "query", service.settings, service.policy)
    docs = [convert(d, f"documents[{i}]", service.settings, service.policy) for i, d in enumerate(documents)]
    counts = service.count_tokens([q.text, *(d.text for d in docs)])
    return q, docs, counts


async def _run(service: _Service, request: Request, query: Side, docs: list[Side], on_error: str) -> RerankResults:
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
    texts = [p.text for p in item.content if p.type == "text"]  # type: ignore[union-attr]
    return ReturnedDocument(text="\n".join(texts) if texts else None, content=[p.model_dump() for p in item.content])


async def _rerank(service: _Service, body: WireRerankRequest, request: Request) -> RerankResponse:
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


async def _score(service: _Service, body: ScoreRequest, request: Request) -> ScoreResponse:
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


async def _precache(service: _Service, body: PrecacheRequest) -> PrecacheResponse:
    from ..scale.ingest import ingest

    engine, _ = service.ready()
    _check_documents(service, len(body.documents))
    outcomes: list[PrecacheOutcome] = []
    positions, candidates = [], []
    for index, item in enumerate(body.documents):
        try:
            side = convert(item, f"documents[{index}]", service.settings, service.policy)
        except ServeError as exc:  # a refused document is that document's outcome, not the request's
            outcomes.append(PrecacheOutcome(index=index, status="failed", reason=exc.message))
            continue
        positions.append(index)
        candidates.append(as_candidate(side))
    done = await asyncio.to_thread(ingest, engine, candidates, positions)
    outcomes += [PrecacheOutcome(index=o.position, status=o.status, reason=o.reason, bytes=o.bytes) for o in done]
    outcomes.sort(key=lambda o: o.index)
    count = {s: sum(o.status == s for o in outcomes) for s in ("stored", "present", "failed")}
    return PrecacheResponse(documents=len(outcomes), results=outcomes, **count)


def _check_documents(service: _Service, count: int, field: str = "documents") -> None:
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


# -- errors and the body limit ------------------------------------------------------------------------


def _error(
    status: int, message: str, *, kind: str, param: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(message=message, type=kind, param=param, code=status))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _field_path(loc: tuple) -> str:
    """``("body", "documents", 3, "Content", "content", 0, "image_url", "image_url", "url")`` ->
    ``documents[3].content[0].image_url.url``: union member names and discriminator tags are dropped."""
    path = ""
    parts = list(loc[1:] if loc and loc[0] == "body" else loc)
    skip = {"str", "Content", "TextItem", "list[union[str,Content,TextItem]]", "function-after[...]"}
    previous = None
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in skip or part.startswith("list[") or part == previous:
            continue
        else:
            path += f".{part}" if path else part
        previous = part
    return path or "body"


def _install_error_handlers(app: FastAPI, service: _Service) -> None:
    @app.exception_handler(ServeError)
    async def serve_error(_: Request, exc: ServeError) -> JSONResponse:
        service.metrics.errors.labels(exc.kind).inc()
        return _error(exc.status, exc.message, kind=exc.kind, param=exc.param, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        # A union reports one error per member; the deepest location is the member the client meant.
        worst = max(errors, key=lambda e: len(e.get("loc", ()))) if errors else {"loc": (), "msg": "invalid body"}
        where = _field_path(tuple(worst.get("loc", ())))
        service.metrics.errors.labels("validation").inc()
        return _error(422, f"{where}: {worst.get('msg')}", kind="invalid_request_error", param=where)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        service.metrics.errors.labels(f"http_{exc.status_code}").inc()
        return _error(exc.status_code, str(exc.detail), kind="http_error", headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        service.metrics.errors.labels(type(exc).__name__).inc()
        return _error(500, f"internal error: {type(exc).__name__}: {exc}", kind="internal_error")


class _BodyLimit:
    """Refuses request bodies over ``limit`` bytes with 413 before any handler reads them: by Content-Length
    when declared, else while the chunks arrive (the body is buffered, at most ``limit`` bytes, and replayed).
    Every answer carries ``X-Minirerank-Instance``, naming the replica that gave it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.state = app.state  # type: ignore[attr-defined]  # so tests and the CLI reach the service
        self._instance = (b"x-minirerank-instance", self.state.service.instance.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        outer = send

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), self._instance]}
            await outer(message)

        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, send, int(declared))
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await self._refuse(scope, send, size)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, send: Send, size: int) -> None:
        self.state.service.metrics.errors.labels("body_too_large").inc()
        response = _error(
            413,
            f"body: {size} bytes, more than the limit of {self.limit} (--max-body-bytes)",
            kind="body_too_large",
            param="body",
        )
        await response(scope, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
