"""``minirerank serve``: the engine as an HTTP service (FastAPI + uvicorn, the ``serve`` extra) that batches
across requests and speaks the rerank API that vLLM, Cohere and Jina clients use.

Modules: :mod:`.settings` (limits and batching, one validated model), :mod:`.protocol` (wire models),
:mod:`.inputs` (wire items to engine inputs, with the limits), :mod:`.urls` (image URLs without SSRF),
:mod:`.batcher` (the micro-batcher), :mod:`.metrics` (Prometheus), :mod:`.app` (the handlers),
:mod:`.server` (running it: in this process on a thread, or as uvicorn's main loop).
"""

from __future__ import annotations

from .app import create_app
from .server import BackgroundServer, free_port
from .settings import ServeSettings

__all__ = ["BackgroundServer", "ServeSettings", "create_app", "free_port"]
