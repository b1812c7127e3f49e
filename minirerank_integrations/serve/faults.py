"""Faults as JSON: every error answer is ``{"error": {"message", "type", "param", "code"}}`` with ``param`` naming
the field at fault (validation errors, HTTP errors, the service's own, anything unhandled), and the request-body
limit (413) enforced before any handler reads a body."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ServeError
from .protocol import ErrorBody, ErrorResponse
from .service import Service

logger = logging.getLogger(__name__)

__all__ = ["BodyLimit", "error_response", "install_error_handlers"]


def error_response(
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


def install_error_handlers(app: FastAPI, service: Service) -> None:
    @app.exception_handler(ServeError)
    async def serveerror_response(_: Request, exc: ServeError) -> JSONResponse:
        service.metrics.errors.labels(exc.kind).inc()
        return error_response(exc.status, exc.message, kind=exc.kind, param=exc.param, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        # A union reports one error per member; the deepest location is the member the client meant.
        worst = max(errors, key=lambda e: len(e.get("loc", ()))) if errors else {"loc": (), "msg": "invalid body"}
        where = _field_path(tuple(worst.get("loc", ())))
        service.metrics.errors.labels("validation").inc()
        return error_response(422, f"{where}: {worst.get('msg')}", kind="invalid_request_error", param=where)

    @app.exception_handler(StarletteHTTPException)
    async def httperror_response(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        service.metrics.errors.labels(f"http_{exc.status_code}").inc()
        return error_response(
            exc.status_code, str(exc.detail), kind="http_error", headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def internal(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        service.metrics.errors.labels(type(exc).__name__).inc()
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}", kind="internal_error")


class BodyLimit:
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

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), self._instance]}
            await send(message)

        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, tagged)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, tagged, int(declared))
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
                await self._refuse(scope, tagged, size)
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

        await self.app(scope, replay, tagged)

    async def _refuse(self, scope: Scope, send: Send, size: int) -> None:
        self.state.service.metrics.errors.labels("body_too_large").inc()
        response = error_response(
            413,
            f"body: {size} bytes, more than the limit of {self.limit} (--max-body-bytes)",
            kind="body_too_large",
            param="body",
        )
        await response(scope, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
