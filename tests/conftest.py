"""Shared fixtures: tiny offline Qwen3-VL checkpoints and small images of several sizes."""

from __future__ import annotations

import pytest
from pictures import drawn_image
from PIL import Image

from minirerank_integrations import MiniReranker
from minirerank_integrations.tiny_checkpoint import build_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny4_path(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny4"), num_layers=4, seed=0)


@pytest.fixture(scope="session")
def tiny8_path(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny8"), num_layers=8, seed=1)


@pytest.fixture(scope="session", params=["tiny4", "tiny8"])
def model_path(request):
    return request.getfixturevalue(f"{request.param}_path")


@pytest.fixture
def reranker(tiny4_path) -> MiniReranker:
    return MiniReranker.from_pretrained(tiny4_path, config="dense")


@pytest.fixture(scope="session")
def images() -> list[Image.Image]:
    """Three different sizes: 64x64, 96x64, 128x96."""
    return [drawn_image(64, 64, 1), drawn_image(96, 64, 2), drawn_image(128, 96, 3)]


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server on 127.0.0.1 and a free port, stopped after the test."""
    from minirerank_integrations.testing import RedisServer

    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()
