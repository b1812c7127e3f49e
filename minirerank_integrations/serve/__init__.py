"""``minirerank serve``: the engine as an HTTP service (FastAPI + uvicorn, the ``serve`` extra) that batches
across requests and speaks the rerank API that vLLM, Cohere and Jina clients use, and the client of that API.

Modules: :mod:`.settings` (limits and batching, one validated model), :mod:`.protocol` (wire models),
:mod:`.inputs` (wire items to engine inputs, with the limits), :mod:`.urls` (image URLs without SSRF),
:mod:`.batcher` (the micro-batcher), :mod:`.metrics` (Prometheus), :mod:`.app` (the handlers),
:mod:`.server` (running it: in this process on a thread, or as uvicorn's main loop), :mod:`.client` (a remote
engine over HTTP for the adapters; needs httpx only). Names load on first use, so the client does not import
FastAPI.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .app import create_app
    from .client import RemoteReranker
    from .server import BackgroundServer, free_port
    from .settings import ServeSettings

_LAZY = {
    "create_app": ".app",
    "RemoteReranker": ".client",
    "BackgroundServer": ".server",
    "free_port": ".server",
    "ServeSettings": ".settings",
}

__all__ = ["BackgroundServer", "RemoteReranker", "ServeSettings", "create_app", "free_port"]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value
