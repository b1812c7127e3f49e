"""Shared fixtures: one tiny offline Qwen3-VL checkpoint, a shared engine, and small image documents."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path

import pytest
from langchain_core.documents import Document
from minirerank_integrations import Candidate, MiniReranker
from minirerank_integrations.tiny_checkpoint import build_tiny_checkpoint
from PIL import Image, ImageDraw


def _png_bytes(seed: int, size: tuple[int, int] = (64, 64)) -> bytes:
    """A small deterministic PNG (sides multiples of 32, so the engine's resize keeps it)."""
    image = Image.new("RGB", size, ((seed * 67) % 256, (seed * 131) % 256, (seed * 29) % 256))
    draw = ImageDraw.Draw(image)
    draw.ellipse([seed % 16, seed % 24, size[0] // 2 + seed % 16, size[1] // 2], fill=(255 - seed * 40 % 256, 40, 90))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _png_base64(seed: int) -> str:
    return base64.b64encode(_png_bytes(seed)).decode("ascii")


@pytest.fixture(scope="session")
def png_bytes() -> Callable[[int], bytes]:
    """Encoded bytes of a small deterministic PNG, one per seed."""
    return _png_bytes


@pytest.fixture(scope="session")
def png_base64() -> Callable[[int], str]:
    """Base64 text of a small deterministic PNG, one per seed."""
    return _png_base64


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), num_layers=4)


@pytest.fixture(scope="session")
def engine(tiny_path: Path) -> MiniReranker:
    """One engine shared by the tests that compare the adapter with it."""
    return MiniReranker.from_pretrained(tiny_path, config="paper")


@pytest.fixture(scope="session")
def image_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for seed in (11, 12):
        path = folder / f"page{seed}.png"
        path.write_bytes(_png_bytes(seed))
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def corpus(image_files: list[Path]) -> list[tuple[Document, Candidate]]:
    """Mixed documents, each beside the engine candidate it stands for (built by hand, not by the adapter)."""
    b64 = [_png_base64(seed) for seed in (1, 2, 3)]
    return [
        (Document(id="img-1", page_content=b64[0]), Candidate(images=(b64[0],), id="img-1")),
        (
            Document(id="img-2", page_content=b64[1], metadata={"source": "chroma"}),
            Candidate(images=(b64[1],), id="img-2"),
        ),
        (
            Document(
                id="page-11", page_content="quarterly report, page one", metadata={"image_path": str(image_files[0])}
            ),
            Candidate(text="quarterly report, page one", images=(image_files[0],), id="page-11"),
        ),
        (
            Document(id="page-12", page_content="", metadata={"image_path": str(image_files[1])}),
            Candidate(images=(image_files[1],), id="page-12"),
        ),
        (
            Document(
                id="meta-3", page_content="a blue square", metadata={"image_base64": b64[2], "mime_type": "image/png"}
            ),
            Candidate(text="a blue square", images=(b64[2],), id="meta-3"),
        ),
        (
            Document(id="txt-1", page_content="a red circle on the left"),
            Candidate(text="a red circle on the left", id="txt-1"),
        ),
        (
            Document(id="txt-2", page_content="Paris is the capital of France."),
            Candidate(text="Paris is the capital of France.", id="txt-2"),
        ),
    ]


@pytest.fixture(scope="session")
def documents(corpus: list[tuple[Document, Candidate]]) -> list[Document]:
    return [document for document, _ in corpus]


@pytest.fixture(scope="session")
def candidates_by_id(corpus: list[tuple[Document, Candidate]]) -> dict[str, Candidate]:
    return {document.id: candidate for document, candidate in corpus}
