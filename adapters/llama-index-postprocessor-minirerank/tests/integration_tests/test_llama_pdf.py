"""PDF files read by SimpleDirectoryReader (PDFReader): each page's node is scored as the rendered page."""

from pathlib import Path

import pytest
from llama_index.core import SimpleDirectoryReader
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.schema import NodeWithScore, TextNode
from minirerank_integrations import Candidate, CandidateError, PdfPage
from minirerank_integrations.testing import shape_pages, write_pdf

from llama_index.postprocessor.minirerank import MiniRerank, MiniRerankPrecache

COLOURS = ["red", "blue", "green"]


@pytest.fixture(scope="module")
def pdf_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pdf(tmp_path_factory.mktemp("pdf") / "shapes.pdf", shape_pages(COLOURS, "ellipse"))


def test_reader_nodes_are_their_pages(fresh_engine, pdf_file: Path) -> None:
    documents = SimpleDirectoryReader(input_files=[str(pdf_file)]).load_data()
    assert [d.metadata["page_label"] for d in documents] == ["1", "2", "3"]
    nodes = [NodeWithScore(node=d, score=0.5) for d in documents]

    result = MiniRerank(model=fresh_engine, top_n=None).postprocess_nodes(nodes, query_str="a blue circle")

    pages = [Candidate(images=[PdfPage(pdf_file, index=i)], id=d.node_id) for i, d in enumerate(documents)]
    expected = fresh_engine.rerank("a blue circle", pages)
    assert [(n.node.node_id, n.score) for n in result] == [(r.id, pytest.approx(r.score, abs=1e-6)) for r in expected]
    assert len({round(r.score, 6) for r in expected}) == 3  # three different pages, three scores


def test_pages_precached_at_ingestion_are_reused(fresh_engine, pdf_file: Path) -> None:
    rerank = MiniRerank(model=fresh_engine, top_n=2)
    documents = SimpleDirectoryReader(input_files=[str(pdf_file)]).load_data()
    IngestionPipeline(transformations=[MiniRerankPrecache(rerank)]).run(documents=documents)
    assert fresh_engine.counters.prefix_computations == 3
    fresh_engine.counters.reset()

    rerank.postprocess_nodes([NodeWithScore(node=d) for d in documents], query_str="a green circle")

    assert (fresh_engine.counters.prefix_computations, fresh_engine.counters.prefix_hits) == (0, 3)


def test_a_missing_page_names_the_node(fresh_engine, pdf_file: Path) -> None:
    node = TextNode(id_="p9", text="", metadata={"file_path": str(pdf_file), "page_label": "9"})
    with pytest.raises(CandidateError, match=r"'p9'.*no page labelled '9'"):
        MiniRerank(model=fresh_engine).postprocess_nodes([NodeWithScore(node=node)], query_str="a red circle")
