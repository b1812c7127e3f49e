"""The compressor inside ContextualCompressionRetriever, compared with the engine's own rerank."""

from __future__ import annotations

import asyncio
import base64
import copy
from pathlib import Path

import pytest
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.vectorstores import InMemoryVectorStore
from minirerank_integrations import Candidate, CandidateError, MiniReranker, Query

from langchain_minirerank import MiniRerankCompressor


def build_retriever(
    compressor: MiniRerankCompressor, documents: list[Document], k: int
) -> ContextualCompressionRetriever:
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=8))
    store.add_documents(documents)
    return ContextualCompressionRetriever(
        base_compressor=compressor, base_retriever=store.as_retriever(search_kwargs={"k": k})
    )


def expected(
    engine: MiniReranker, query: str | Query, retrieved: list[Document], candidates_by_id: dict, top_n: int | None
) -> list[tuple[str, float]]:
    """(id, score) of what the engine itself returns for the retrieved documents, in retrieval order."""
    candidates = [candidates_by_id[document.id] for document in retrieved]
    return [(r.id, r.score) for r in engine.rerank(query, candidates, top_n=top_n)]


def got(documents: list[Document]) -> list[tuple[str, float]]:
    return [(document.id, document.metadata["relevance_score"]) for document in documents]


@pytest.mark.parametrize("top_n", [2, None])
def test_invoke_and_ainvoke_match_the_engine(engine, documents, candidates_by_id, top_n) -> None:
    retriever = build_retriever(MiniRerankCompressor(model=engine, top_n=top_n), documents, k=6)
    query = "a red circle on the left"
    retrieved = retriever.base_retriever.invoke(query)
    assert len(retrieved) == 6
    want = expected(engine, query, retrieved, candidates_by_id, top_n)
    assert len(want) == (6 if top_n is None else top_n)

    assert got(retriever.invoke(query)) == want
    assert got(asyncio.run(retriever.ainvoke(query))) == want


def test_default_top_n_is_five(engine, documents) -> None:
    retriever = build_retriever(MiniRerankCompressor(model=engine), documents, k=7)
    results = retriever.invoke("quarterly report")
    assert len(results) == 5  # as the LlamaIndex postprocessor's default
    scores = [document.metadata["relevance_score"] for document in results]
    assert scores == sorted(scores, reverse=True)


def test_score_threshold_leaves_out_lower_scores(engine, documents) -> None:
    everything = MiniRerankCompressor(model=engine, top_n=None).compress_documents(documents, "a blue square")
    scores = [document.metadata["relevance_score"] for document in everything]
    threshold = (scores[1] + scores[2]) / 2  # between the second and third best
    kept = MiniRerankCompressor(model=engine, top_n=None, score_threshold=threshold).compress_documents(
        documents, "a blue square"
    )
    assert got(kept) == got(everything)[:2]


@pytest.mark.parametrize("form", ["data_uri", "raw_base64"])
def test_image_queries_match_the_engine(engine, documents, candidates_by_id, png_base64, form) -> None:
    b64 = png_base64(7)
    query = f"data:image/png;base64,{b64}" if form == "data_uri" else b64
    compressor = MiniRerankCompressor(model=engine, top_n=4)
    want = expected(engine, Query(images=(b64,)), documents, candidates_by_id, 4)
    assert got(compressor.compress_documents(documents, query)) == want


def test_image_path_query_needs_the_option(engine, documents, candidates_by_id, png_bytes, tmp_path: Path) -> None:
    path = tmp_path / "query.png"
    path.write_bytes(png_bytes(8))
    as_image = expected(engine, Query(images=(path,)), documents, candidates_by_id, None)
    as_text = expected(engine, str(path), documents, candidates_by_id, None)
    assert as_image != as_text
    with_option = MiniRerankCompressor(model=engine, top_n=None, query_image_paths=True)
    without = MiniRerankCompressor(model=engine, top_n=None)
    assert got(with_option.compress_documents(documents, str(path))) == as_image
    assert got(without.compress_documents(documents, str(path))) == as_text


def test_inputs_are_unchanged_and_results_are_copies(engine, documents) -> None:
    before = copy.deepcopy(documents)
    compressor = MiniRerankCompressor(model=engine, top_n=None)
    results = compressor.compress_documents(documents, "a red circle")
    results_async = asyncio.run(compressor.acompress_documents(documents, "a red circle"))
    assert documents == before
    assert all("relevance_score" not in document.metadata for document in documents)
    originals = {id(document) for document in documents} | {id(document.metadata) for document in documents}
    for document in [*results, *results_async]:
        assert id(document) not in originals and id(document.metadata) not in originals
        original = next(d for d in before if d.id == document.id)
        assert document.page_content == original.page_content
        assert {k: v for k, v in document.metadata.items() if k != "relevance_score"} == original.metadata


def test_image_url_needs_a_fetcher(tiny_path: Path, png_bytes) -> None:
    pictures = {"https://example.org/a.png": png_bytes(21), "https://example.org/b.png": png_bytes(22)}
    fetched: list[str] = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        return pictures[url]

    docs = [Document(id=url[-5:], page_content="figure", metadata={"image_url": url}) for url in pictures]
    compressor = MiniRerankCompressor(model=tiny_path, image_fetcher=fetch, top_n=None)
    engine = compressor.reranker
    want = [
        (docs[r.index].id, r.score)
        for r in engine.rerank(
            "chart", [Candidate(text="figure", images=(pictures[d.metadata["image_url"]],)) for d in docs]
        )
    ]
    assert got(compressor.compress_documents(docs, "chart")) == want
    assert sorted(fetched) == sorted(pictures)

    # Without a fetcher the URLs are not images: both documents are the text "figure".
    plain = MiniRerankCompressor(model=engine, top_n=None).compress_documents(docs, "chart")
    assert plain[0].metadata["relevance_score"] == plain[1].metadata["relevance_score"]


BAD_DOCUMENTS = {
    "corrupt_base64": Document(
        id="bad", page_content="scan", metadata={"image_base64": base64.b64encode(b"\x89PNG\r\n\x1a\nbroken").decode()}
    ),
    "missing_file": Document(id="bad", page_content="scan", metadata={"image_path": "/no/such/dir/page.png"}),
}


@pytest.mark.parametrize("kind", sorted(BAD_DOCUMENTS))
def test_bad_document_raises_under_raise(engine, documents, kind) -> None:
    docs = [documents[0], BAD_DOCUMENTS[kind], documents[5]]
    retriever = build_retriever(MiniRerankCompressor(model=engine), docs, k=3)
    with pytest.raises(CandidateError) as raised:
        retriever.invoke("a red circle")
    assert raised.value.candidate_id == "bad"
    retrieved_ids = [d.id for d in retriever.base_retriever.invoke("a red circle")]
    assert raised.value.index == retrieved_ids.index("bad")
    with pytest.raises(CandidateError, match="bad"):
        asyncio.run(retriever.ainvoke("a red circle"))


@pytest.mark.parametrize("kind", sorted(BAD_DOCUMENTS))
def test_bad_document_is_left_out_under_skip(engine, documents, candidates_by_id, kind) -> None:
    good = [documents[0], documents[2], documents[5]]
    docs = [good[0], BAD_DOCUMENTS[kind], *good[1:]]
    compressor = MiniRerankCompressor(model=engine, on_error="skip", top_n=None)
    want = expected(engine, "a red circle", good, candidates_by_id, None)
    assert got(compressor.compress_documents(docs, "a red circle")) == want
    assert got(asyncio.run(compressor.acompress_documents(docs, "a red circle"))) == want
