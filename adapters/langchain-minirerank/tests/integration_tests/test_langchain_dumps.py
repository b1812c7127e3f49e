"""LangChain document dumps read by the core (``minirerank precache``) are the candidates the compressor scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from langchain_community.document_loaders import PyPDFLoader
from langchain_core.documents import Document
from langchain_core.load import dumpd
from minirerank_integrations import InputError, StoreConfig
from minirerank_integrations.cli import main
from minirerank_integrations.engine.documents import read_documents
from minirerank_integrations.testing import shape_pages, write_pdf

from langchain_minirerank import MiniRerankCompressor
from langchain_minirerank._inputs import ImageKeys, candidate_from_document
from langchain_minirerank.dumps import candidate_from_dump

COLOURS = ["red", "blue", "green"]


@pytest.fixture(scope="module")
def pdf_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pdf(tmp_path_factory.mktemp("pdf") / "squares.pdf", shape_pages(COLOURS, "rectangle"))


def test_a_pypdf_page_dump_precached_by_the_cli_is_read_by_the_compressor(
    tiny_path: Path, pdf_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    documents = PyPDFLoader(str(pdf_file)).load()
    assert [d.metadata["page"] for d in documents] == [0, 1, 2]
    dump = tmp_path / "pages.jsonl"
    lines = [
        json.dumps(documents[0].model_dump()),
        json.dumps(documents[1].model_dump()),
        json.dumps(dumpd(documents[2])),
    ]
    dump.write_text("\n".join(lines) + "\n", encoding="utf-8")
    store = tmp_path / "store"
    argv = ["precache", str(dump), "--model", str(tiny_path), "--cache-dir", str(store), "--no-progress"]
    assert main(argv) == 0
    assert "documents: 3 (3 stored, 0 already stored, 0 failed)" in capsys.readouterr().out

    compressor = MiniRerankCompressor(model=str(tiny_path), store=StoreConfig(dir=str(store)), top_n=None)
    result = compressor.compress_documents(documents, "a blue square")
    assert len(result) == 3
    counters = compressor.reranker.counters
    # Every page's prefix was found: the dump was read as the rendered pages the compressor scores.
    assert (counters.prefix_hits, counters.prefix_computations) == (3, 0)


def test_a_dump_line_is_the_candidate_of_its_document(tmp_path: Path, png_base64) -> None:
    documents = [
        Document(page_content="a chain text", id="t"),
        Document(page_content="", metadata={"image_base64": png_base64(3), "mime_type": "image/png"}, id="b"),
        Document(page_content=png_base64(4), id="content"),  # base64 page content is an image
        Document(page_content="x", metadata={"source": "/data/report.pdf", "page": 4}, id="page"),
    ]
    keys = ImageKeys(paths=("image_path",), base64=("image_base64",), urls=(), mime_type="mime_type")
    for document in documents:
        expected = candidate_from_document(document, keys)
        assert candidate_from_dump(document.model_dump(), "line") == expected
        assert candidate_from_dump(dumpd(document), "line") == expected
    dump = tmp_path / "dump.jsonl"
    dump.write_text("".join(json.dumps(d.model_dump()) + "\n" for d in documents), encoding="utf-8")
    assert read_documents([dump]) == [candidate_from_document(d, keys) for d in documents]


def test_a_document_without_content_is_named(tmp_path: Path) -> None:
    dump = tmp_path / "dump.jsonl"
    dump.write_text(json.dumps(Document(page_content=" ", id="blank").model_dump()) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"dump.jsonl:1: the document has neither text nor images"):
        read_documents([dump])
