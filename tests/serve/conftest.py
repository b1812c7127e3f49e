"""Serving fixtures: the demo model loaded once for the servers and once more in-process as the reference, and
real uvicorn servers on 127.0.0.1 (free ports), started and stopped by the tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from minirerank_integrations import MiniReranker
from minirerank_integrations.serve import BackgroundServer, ServeSettings, create_app


@pytest.fixture(scope="session")
def serve_engine() -> MiniReranker:
    """The engine behind the test servers (the embedded demo model, its adapted vision-first variant)."""
    return MiniReranker.from_pretrained()


@pytest.fixture(scope="session")
def local_engine() -> MiniReranker:
    """A second, independent load of the same model: the in-process reference the server must match."""
    return MiniReranker.from_pretrained()


@pytest.fixture(scope="session")
def server(serve_engine) -> Iterator[BackgroundServer]:
    """One server with the default settings, shared by the API tests."""
    with BackgroundServer(create_app(serve_engine, ServeSettings())) as running:
        yield running


@pytest.fixture
def start_server(serve_engine) -> Iterator[Callable[..., BackgroundServer]]:
    """Starts a server over the shared engine with the given settings; every one is stopped after the test."""
    started: list[BackgroundServer] = []

    def start(**settings: object) -> BackgroundServer:
        running = BackgroundServer(create_app(serve_engine, ServeSettings(**settings))).start()  # type: ignore[arg-type]
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()
