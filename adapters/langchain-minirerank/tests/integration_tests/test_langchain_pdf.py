"""PDF loaders' documents (source + page) are scored as their rendered pages."""

from pathlib import Path

import pytest
from langchain_community.document_loaders import PyPDFium2Loader, PyPDFLoader
from langchain_core.documents import Document
from minirerank_integrations import Candidate, CandidateError, PdfPage
from minirerank_integrations.testing import shape_pages, write_pdf

from langchain_minirerank import MiniRerankCompressor

COLOURS = ["red", "blue", "green"]


@pytest.fixture(scope="module")
def pdf_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pdf(tmp_path_factory.mktemp("pdf") / "squares.pdf", shape_pages(COLOURS, "rectangle"))


@pytest.mark.parametrize("loader", [PyPDFLoader, PyPDFium2Loader])
def test_loader_documents_are_their_pages(engine, pdf_file: Path, loader) -> None:
    documents = loader(str(pdf_file)).load()
    assert [d.metadata["page"] for d in documents] == [0, 1, 2]

    result = MiniRerankCompressor(model=engine, top_n=None).compress_documents(documents, "a blue square")

    pages = [Candidate(images=[PdfPage(pdf_file, index=i)], id=str(i)) for i in range(3)]
    expected = engine.rerank("a blue square", pages)
    assert [(d.metadata["page"], d.metadata["relevance_score"]) for d in result] == [
        (int(r.id), pytest.approx(r.score, abs=1e-6)) for r in expected
    ]
    assert len({round(r.score, 6) for r in expected}) == 3


def test_a_missing_page_names_the_document(engine, pdf_file: Path) -> None:
    documents = [Document(id="p9", page_content="text", metadata={"source": str(pdf_file), "page": 9})]
    with pytest.raises(CandidateError, match=r"'p9'.*no such page, the PDF has 3 pages"):
        MiniRerankCompressor(model=engine).compress_documents(documents, "a red square")
