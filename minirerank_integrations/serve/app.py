"""The FastAPI app of ``minirerank serve``: its routes and its lifecycle (the model loaded on a thread, the
batcher started, every admitted request finished on shutdown). The routes' work is in :mod:`.handlers`, the
error answers and the body limit in :mod:`.faults`, the shared state in :mod:`.service`.

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
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp

from .. import MiniReranker
from . import handlers
from .batcher import MicroBatcher
from .errors import ServeError
from .faults import BodyLimit, install_error_handlers
from .protocol import (
    ModelCard,
    ModelList,
    PrecacheRequest,
    PrecacheResponse,
    RerankResponse,
    ScoreRequest,
    ScoreResponse,
)
from .protocol import RerankRequest as WireRerankRequest
from .service import Service
from .settings import ServeSettings

logger = logging.getLogger(__name__)

__all__ = ["create_app"]


def create_app(engine: MiniReranker | Callable[[], MiniReranker], settings: ServeSettings | None = None) -> ASGIApp:
    """The service (an ASGI app) over ``engine``, or over what ``engine()`` returns: that loader runs on a thread
    after the server starts, and ``/health`` answers 503 until it returns. The engine's ``image_fetcher`` is
    replaced by the service's guarded one (allowlist, address checks, size and time limits). ``app.state.service``
    holds the running state (engine, batcher, metrics)."""
    settings = settings or ServeSettings()
    service = Service(settings)

    def install(loaded: MiniReranker) -> None:
        loaded.image_fetcher = service.fetch_image
        service.engine = loaded

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
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
    install_error_handlers(app, service)

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
        return await handlers.timed(service, "rerank", handlers.rerank(service, body, request))

    @api.post("/v2/rerank", response_model=RerankResponse, response_model_exclude_none=True)
    async def rerank_v2(body: WireRerankRequest, request: Request) -> Any:
        return await handlers.timed(service, "rerank_v2", handlers.rerank(service, body, request))

    @api.post("/v1/score", response_model=ScoreResponse)
    @api.post("/score", response_model=ScoreResponse, include_in_schema=False)
    async def score(body: ScoreRequest, request: Request) -> Any:
        return await handlers.timed(service, "score", handlers.score(service, body, request))

    @api.post("/v1/precache", response_model=PrecacheResponse)
    async def precache(body: PrecacheRequest) -> Any:
        return await handlers.timed(service, "precache", handlers.precache(service, body))

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

    return BodyLimit(app, settings.max_body_bytes)
