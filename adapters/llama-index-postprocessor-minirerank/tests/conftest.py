"""Shared fixtures: a tiny random Qwen3-VL checkpoint built offline, tiny PNG images, a mixed corpus of
real LlamaIndex nodes, and the engine-side expectation the adapter is compared with."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from llama_index.core.schema import BaseNode, ImageNode, MetadataMode, Node, NodeWithScore, TextNode
from minirerank_integrations import Candidate, MiniReranker, Query
from minirerank_integrations.tiny_checkpoint import build_tiny_checkpoint
from PIL import Image, ImageDraw

COLOURS = ("red", "blue", "green", "yellow")


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), num_layers=4)


@pytest.fixture(scope="session")
def engine(tiny_path: Path) -> MiniReranker:
    """One engine shared by most tests, as one model is shared by components in an application."""
    return MiniReranker.from_pretrained(tiny_path, config="paper")


@pytest.fixture
def fresh_engine(tiny_path: Path) -> MiniReranker:
    """An engine with an empty prefix store and zeroed counters."""
    return MiniReranker.from_pretrained(tiny_path, config="paper")


def _png(colour: str, shape: str) -> bytes:
    image = Image.new("RGB", (64, 64), "white")
    draw = ImageDraw.Draw(image)
    if shape == "circle":
        draw.ellipse((8, 8, 56, 56), fill=colour)
    else:
        draw.rectangle((12, 12, 52, 52), fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class Images:
    """Tiny PNGs, one per colour: as bytes, base64 text and files."""

    png: dict[str, bytes]
    b64: dict[str, str]
    path: dict[str, str]


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    folder = tmp_path_factory.mktemp("images")
    png, b64, path = {}, {}, {}
    for index, colour in enumerate(COLOURS):
        png[colour] = _png(colour, "circle" if index % 2 == 0 else "square")
        b64[colour] = base64.b64encode(png[colour]).decode()
        file = folder / f"{colour}.png"
        file.write_bytes(png[colour])
        path[colour] = str(file)
    return Images(png, b64, path)


@pytest.fixture
def mixed_nodes(images: Images) -> list[BaseNode]:
    """Fresh node objects: image nodes (base64, file path, with a caption) and text nodes.

    Image nodes carry a file name in their metadata, as readers record it; the metadata makes their
    embedding text non-empty, so ``VectorStoreIndex`` keeps them.
    """
    return [
        ImageNode(
            id_="img-red-b64",
            image=images.b64["red"],
            image_mimetype="image/png",
            metadata={"file_name": "red.png"},
        ),
        ImageNode(id_="img-blue-path", image_path=images.path["blue"], metadata={"file_name": "blue.png"}),
        ImageNode(
            id_="img-green-caption",
            image=images.b64["green"],
            text="a green circle on a white page",
            metadata={"file_name": "green.png"},
        ),
        TextNode(id_="txt-paris", text="Paris is the capital of France.", metadata={"title": "Geography"}),
        TextNode(id_="txt-fox", text="The quick brown fox jumps."),
    ]


@pytest.fixture
def image_nodes(images: Images) -> list[NodeWithScore]:
    """One ImageNode per colour, half base64 and half file path, with distinct retrieval scores."""
    nodes = []
    for index, colour in enumerate(COLOURS):
        if index % 2 == 0:
            node = ImageNode(id_=f"img-{colour}", image=images.b64[colour], image_mimetype="image/png")
        else:
            node = ImageNode(id_=f"img-{colour}", image_path=images.path[colour])
        nodes.append(NodeWithScore(node=node, score=1.0 - index / 10))
    return nodes


def expected_candidate(node: BaseNode, metadata_mode: MetadataMode = MetadataMode.EMBED) -> Candidate:
    """The engine input the README promises for ``node``, written out independently of the adapter."""
    own_text = node.get_content(metadata_mode=MetadataMode.NONE)
    text = node.get_content(metadata_mode=metadata_mode) if own_text.strip() else None
    images: list[object] = []
    if isinstance(node, ImageNode):
        if node.image:
            images.append(node.image)
        elif node.image_path:
            images.append(node.image_path)
    elif isinstance(node, Node) and node.image_resource is not None:
        resource = node.image_resource
        images.append(base64.b64decode(resource.data) if resource.data else str(resource.path))
    elif str(node.metadata.get("file_path", "")).endswith(".png"):
        images.append(node.metadata["file_path"])
    return Candidate(text=text, images=images, id=node.node_id)


def engine_ranking(
    engine: MiniReranker,
    query: str | Query,
    nodes: Sequence[NodeWithScore | BaseNode],
    top_n: int | None,
    metadata_mode: MetadataMode = MetadataMode.EMBED,
) -> list[tuple[str, float]]:
    """(node id, score) pairs, best first, as the engine returns them for the same inputs."""
    bare = [n.node if isinstance(n, NodeWithScore) else n for n in nodes]
    results = engine.rerank(query, [expected_candidate(n, metadata_mode) for n in bare], top_n=top_n)
    return [(bare[r.index].node_id, r.score) for r in results]


def ranking(nodes: Sequence[NodeWithScore]) -> list[tuple[str, float]]:
    return [(n.node.node_id, n.score) for n in nodes]


@pytest.fixture
def expect() -> Callable[..., list[tuple[str, float]]]:
    """``expect(engine, query, nodes, top_n, metadata_mode=EMBED)``: the engine's own ranking."""
    return engine_ranking


@pytest.fixture
def ranked() -> Callable[[Sequence[NodeWithScore]], list[tuple[str, float]]]:
    """``ranked(nodes)``: (node id, score) pairs of an adapter result."""
    return ranking


@pytest.fixture
def candidate_of() -> Callable[..., Candidate]:
    return expected_candidate
