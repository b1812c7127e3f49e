"""LlamaIndex node dumps read by the core (``minirerank precache``) are the candidates the postprocessor scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from llama_index.core import SimpleDirectoryReader
from llama_index.core.schema import BaseNode, ImageNode, MetadataMode, NodeWithScore, TextNode
from llama_index.core.storage.docstore.utils import doc_to_json
from minirerank_integrations import InputError, StoreConfig
from minirerank_integrations.cli import main
from minirerank_integrations.engine.documents import read_documents
from minirerank_integrations.testing import shape_pages, write_pdf

from llama_index.postprocessor.minirerank import MiniRerank
from llama_index.postprocessor.minirerank._convert import node_to_candidate
from llama_index.postprocessor.minirerank.dumps import candidate_from_dump

COLOURS = ["red", "blue", "green"]


@pytest.fixture(scope="module")
def pdf_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pdf(tmp_path_factory.mktemp("pdf") / "shapes.pdf", shape_pages(COLOURS, "ellipse"))


def test_a_pdf_reader_node_dump_precached_by_the_cli_is_read_by_the_postprocessor(
    tiny_path: Path, pdf_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    documents = SimpleDirectoryReader(input_files=[str(pdf_file)]).load_data()
    assert [d.metadata["page_label"] for d in documents] == ["1", "2", "3"]
    dump = tmp_path / "nodes.jsonl"
    dump.write_text("".join(json.dumps(d.to_dict()) + "\n" for d in documents), encoding="utf-8")
    store = tmp_path / "store"
    argv = ["precache", str(dump), "--model", str(tiny_path), "--cache-dir", str(store), "--no-progress"]
    assert main(argv) == 0
    assert "documents: 3 (3 stored, 0 already stored, 0 failed)" in capsys.readouterr().out

    reranker = MiniRerank(model=str(tiny_path), store=StoreConfig(dir=str(store)), top_n=None)
    nodes = [NodeWithScore(node=d, score=0.5) for d in documents]
    assert len(reranker.postprocess_nodes(nodes, query_str="a blue circle")) == 3
    counters = reranker.engine.counters
    # Every page's prefix was found: each node was read as the rendered page the postprocessor scores.
    assert (counters.prefix_hits, counters.prefix_computations) == (3, 0)


def scored(node: BaseNode) -> object:
    """The candidate the postprocessor (default settings) scores for ``node``."""
    return node_to_candidate(node, MetadataMode.EMBED, None)


def test_a_dump_line_is_the_candidate_of_its_node(tmp_path: Path, images) -> None:
    nodes = [
        TextNode(text="a llama text", id_="t", metadata={"author": "someone"}),  # metadata rendered as scored
        ImageNode(image_path=str(images.path["yellow"]), text="", id_="i"),
        TextNode(text="", id_="f", metadata={"file_path": str(images.path["yellow"]), "file_type": "image/png"}),
        TextNode(text="page text", id_="p", metadata={"file_path": "/data/report.pdf", "page_label": "iv"}),
    ]
    for node in nodes:
        assert candidate_from_dump(node.to_dict(), "line") == scored(node)
        assert candidate_from_dump(doc_to_json(node), "line") == scored(node)
    dump = tmp_path / "dump.jsonl"
    dump.write_text("".join(json.dumps(n.to_dict()) + "\n" for n in nodes), encoding="utf-8")
    assert read_documents([dump]) == [scored(n) for n in nodes]


def test_a_node_of_another_class_is_named(tmp_path: Path) -> None:
    dump = tmp_path / "dump.jsonl"
    dump.write_text(json.dumps({"id_": "n", "class_name": "Pipeline"}) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"dump.jsonl:1: class_name 'Pipeline' is not a LlamaIndex node class"):
        read_documents([dump])
