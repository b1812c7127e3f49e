"""A PDF page through the remote client: rendered on the client as the engine renders it and sent as an image_url
data URI, so the server's scores equal the local engine's on the same pages."""

from __future__ import annotations

import pytest

from minirerank_integrations import Candidate, CandidateError, PdfPage
from minirerank_integrations.serve import RemoteReranker
from minirerank_integrations.testing import shape_pages, write_pdf

QUERY = "a red shape"


def test_pdf_pages_score_as_locally(server, local_engine, tmp_path) -> None:
    pdf = write_pdf(tmp_path / "pages.pdf", shape_pages(["red", "blue", "green"]))
    candidates = [
        Candidate(images=[PdfPage(pdf, index=0)], id="red"),
        Candidate(images=[PdfPage(pdf, index=1, scale=1.5)], id="blue"),
        Candidate(images=[f"{pdf}#page=3"], id="green"),
        Candidate(text="a table of numbers", id="text"),
    ]
    local = local_engine.rerank(QUERY, candidates)
    remote = RemoteReranker(server.url).rerank(QUERY, candidates)
    assert [r.id for r in remote] == [r.id for r in local]
    assert max(abs(r.score - e.score) for r, e in zip(remote, local)) < 1e-5


def test_a_missing_pdf_is_the_candidates_error(server, tmp_path) -> None:
    with pytest.raises(CandidateError) as caught:
        RemoteReranker(server.url).rerank(QUERY, ["text", Candidate(images=[PdfPage(tmp_path / "no.pdf", index=0)])])
    assert caught.value.index == 1 and "no.pdf" in str(caught.value)
