"""A shared engine is serialized only as what reloads it; a moved reader image leaves the node its text."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode
from minirerank_integrations import MiniReranker
from minirerank_integrations.tiny_checkpoint import build_tiny_checkpoint

from llama_index.postprocessor.minirerank import MiniRerank


def _scores(rerank: MiniRerank, nodes: list[NodeWithScore], query: str) -> dict[str, float]:
    return {n.node.node_id: n.score for n in rerank.postprocess_nodes(nodes, query_str=query)}


def test_the_shared_demo_serializes_as_the_demo_and_reloads_the_same_scores() -> None:
    shared = MiniRerank(model=MiniReranker.from_pretrained(), top_n=None)
    data = shared.to_dict()
    assert data["model"] == "minirerank-demo"
    again = MiniRerank.from_dict(data)
    nodes = [NodeWithScore(node=TextNode(text=t, id_=t)) for t in ("a red circle", "a blue square", "a page of text")]
    assert _scores(again, nodes, "red circle") == pytest.approx(_scores(shared, nodes, "red circle"), abs=1e-6)


def test_a_shared_engine_its_fields_cannot_rebuild_refuses_to_serialize(tiny_path: Path, tmp_path: Path) -> None:
    other = build_tiny_checkpoint(tmp_path / "embedder", num_layers=2, seed=5)
    engines = {
        "embedder": MiniReranker.from_pretrained(tiny_path, embedder=other),
        "cache_dir": MiniReranker.from_pretrained(tiny_path, cache_dir=tmp_path / "store"),
    }
    engines["from_pretrained"] = MiniReranker(engines["embedder"].backbone)
    for reason, engine in engines.items():
        rerank = MiniRerank(model=engine)  # sharing still works
        with pytest.raises(ValueError, match=reason):
            rerank.to_dict()
        with pytest.raises(ValueError, match=reason):
            rerank.to_json()


def test_a_moved_reader_image_scores_the_node_on_its_text(
    engine: MiniReranker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    moved = TextNode(text="a red circle", id_="moved", metadata={"file_path": str(tmp_path / "gone.png")})
    plain = TextNode(text="a red circle", id_="plain")
    rerank = MiniRerank(model=engine, top_n=None, metadata_mode=MetadataMode.NONE)  # the text alone
    with caplog.at_level(logging.WARNING):
        scores = _scores(rerank, [NodeWithScore(node=moved), NodeWithScore(node=plain)], "red")
    assert set(scores) == {"moved", "plain"} and scores["moved"] == pytest.approx(scores["plain"], abs=1e-6)
    assert sum("no longer exists" in r.getMessage() for r in caplog.records) == 1
