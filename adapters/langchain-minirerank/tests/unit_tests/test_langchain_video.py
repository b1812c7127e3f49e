"""Video documents: ``metadata["video_path"]`` and ``metadata["video_url"]`` are scored with their video, exactly as the
engine scores ``Candidate(videos=...)``; URLs are read under the image URLs' rule."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.documents import Document
from minirerank_integrations import Candidate, CandidateError, MiniReranker, PdfPage, VideoLoadError
from minirerank_integrations.testing import moving_shape_frames, write_video

from langchain_minirerank import MiniRerankCompressor
from langchain_minirerank._inputs import ImageKeys, candidate_from_document
from langchain_minirerank.dumps import candidate_from_dump

QUERY = "a red circle moving right"
URL = "https://videos.example/red.mp4"
KEYS = ImageKeys(
    paths=("image_path",),
    base64=(),
    urls=(),
    mime_type="mime_type",
    video_paths=("video_path",),
    video_urls=("video_url",),
)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    return {c: write_video(folder / f"{c}.mp4", moving_shape_frames(c)) for c in ("red", "blue", "green")}


def test_video_keys_become_the_candidates_videos(clips, image_files) -> None:
    red, blue = str(clips["red"]), str(clips["blue"])
    both = Document(
        id="a",
        page_content="a caption",
        metadata={"video_path": [red, clips["blue"].as_uri()], "video_url": URL, "image_path": str(image_files[0])},
    )
    candidate = candidate_from_document(both, KEYS)
    assert candidate == Candidate(
        text="a caption", images=(Path(image_files[0]),), id="a", videos=(Path(red), clips["blue"].as_uri(), URL)
    )
    # A PDF loader's page that also names a video is not its page alone.
    paged = Document(page_content="page text", metadata={"source": "r.pdf", "page": 0, "video_path": blue})
    assert candidate_from_document(paged, KEYS).videos == (Path(blue),)
    assert candidate_from_document(Document(page_content="", metadata={"source": "r.pdf", "page": 0}), KEYS).images == (
        PdfPage("r.pdf", index=0),
    )
    no_urls = ImageKeys(paths=(), base64=(), urls=(), mime_type=None, video_paths=("video_path",))
    assert candidate_from_document(Document(page_content="x", metadata={"video_url": URL}), no_urls).videos == ()


def test_video_documents_score_as_the_engine_candidates(engine, clips) -> None:
    documents = [
        Document(id="path", page_content="", metadata={"video_path": str(clips["red"])}),
        Document(id="captioned", page_content="a blue clip", metadata={"video_path": clips["blue"].as_uri()}),
        Document(id="green", page_content="", metadata={"video_path": str(clips["green"])}),
        Document(id="text", page_content="a red circle on a white page"),
    ]
    got = MiniRerankCompressor(model=engine, top_n=None).compress_documents(documents, QUERY)
    expected = engine.rerank(
        QUERY,
        [
            Candidate(videos=[clips["red"]]),
            Candidate(text="a blue clip", videos=[clips["blue"].as_uri()]),
            Candidate(videos=[clips["green"]]),
            Candidate(text="a red circle on a white page"),
        ],
    )
    assert [d.id for d in got] == [documents[r.index].id for r in expected]
    assert all(abs(d.metadata["relevance_score"] - r.score) <= 1e-6 for d, r in zip(got, expected, strict=True))
    assert len({d.metadata["relevance_score"] for d in got}) == 4
    assert "relevance_score" not in documents[0].metadata  # copies are returned


def test_a_video_url_is_read_with_an_image_fetcher(tiny_path, clips) -> None:
    fetched: list[str] = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        return clips["red"].read_bytes()

    document = Document(id="url", page_content="a clip", metadata={"video_url": URL})
    with_fetcher = MiniRerankCompressor(model=str(tiny_path), config="paper", image_fetcher=fetch, device="cpu")
    got = with_fetcher.compress_documents([document], QUERY)
    want = with_fetcher.reranker.rerank(QUERY, [Candidate(text="a clip", videos=[clips["red"].read_bytes()])])
    assert fetched == [URL] and abs(got[0].metadata["relevance_score"] - want[0].score) <= 1e-6


def test_without_a_fetcher_a_video_url_is_not_read(engine) -> None:
    document = Document(id="url", page_content="a clip", metadata={"video_url": URL})
    got = MiniRerankCompressor(model=engine).compress_documents([document], QUERY)
    assert abs(got[0].metadata["relevance_score"] - engine.rerank(QUERY, ["a clip"])[0].score) <= 1e-6


def test_an_unreadable_video_follows_on_error(engine: MiniReranker, tmp_path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x07" * 200)
    documents = [
        Document(id="text", page_content="a red circle"),
        Document(id="broken", page_content="", metadata={"video_path": str(broken)}),
        Document(id="gone", page_content="", metadata={"video_path": str(tmp_path / "gone.mp4")}),
    ]
    with pytest.raises(CandidateError) as caught:
        MiniRerankCompressor(model=engine).compress_documents(documents, QUERY)
    assert caught.value.index == 1 and isinstance(caught.value.cause, VideoLoadError)
    kept = MiniRerankCompressor(model=engine, on_error="skip").compress_documents(documents, QUERY)
    assert [d.id for d in kept] == ["text"]


def test_a_dump_with_a_video_is_read_as_the_compressor_reads_it(clips) -> None:
    document = Document(id="d", page_content="a caption", metadata={"video_path": str(clips["red"])})
    assert candidate_from_dump(document.model_dump(), "line 1") == Candidate(
        text="a caption", id="d", videos=(Path(clips["red"]),)
    )
