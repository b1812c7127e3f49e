"""Video nodes: ``Node.video_resource`` (data, path, url) and ``metadata["file_path"]`` naming a video file are scored
with their video, exactly as the engine scores ``Candidate(videos=...)``; a URL goes through the image fetcher; a video
pre-cached at ingestion is a prefix hit at query time."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from llama_index.core.schema import MediaResource, MetadataMode, Node, NodeWithScore, TextNode
from minirerank_integrations import Candidate, CandidateError, VideoLoadError
from minirerank_integrations.testing import moving_shape_frames, write_video

from llama_index.postprocessor.minirerank import MiniRerank, MiniRerankPrecache
from llama_index.postprocessor.minirerank.dumps import candidate_from_dump

QUERY = "a red circle moving right"
URL = "https://videos.example/red.mp4"


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    return {c: write_video(folder / f"{c}.mp4", moving_shape_frames(c)) for c in ("red", "blue", "green")}


def _scores(nodes: list[NodeWithScore]) -> dict[str, float]:
    return {n.node.node_id: float(n.score or 0.0) for n in nodes}


def test_video_nodes_score_as_the_engine_candidates(engine, clips) -> None:
    nodes = [
        Node(id_="path", video_resource=MediaResource(path=clips["red"])),
        Node(
            id_="data",
            video_resource=MediaResource(data=clips["blue"].read_bytes(), mimetype="video/mp4"),
            text_resource=MediaResource(text="a blue clip"),
        ),
        TextNode(id_="reader", text="", metadata={"file_path": str(clips["green"]), "file_type": "video/mp4"}),
        TextNode(id_="by-extension", text="", metadata={"file_path": str(clips["red"])}),
        TextNode(id_="text", text="a red circle on a white page"),
    ]
    reranked = MiniRerank(model=engine, top_n=None).postprocess_nodes(
        [NodeWithScore(node=n, score=0.5) for n in nodes], query_str=QUERY
    )
    candidates = [
        Candidate(videos=[clips["red"]]),
        Candidate(text=nodes[1].get_content(metadata_mode=MetadataMode.EMBED), videos=[clips["blue"].read_bytes()]),
        Candidate(videos=[str(clips["green"])]),
        Candidate(videos=[str(clips["red"])]),
        Candidate(text=nodes[4].get_content(metadata_mode=MetadataMode.EMBED)),
    ]
    expected = engine.rerank(QUERY, candidates)
    assert [n.node.node_id for n in reranked] == [nodes[r.index].node_id for r in expected]
    got = _scores(reranked)
    assert all(abs(got[nodes[r.index].node_id] - r.score) <= 1e-6 for r in expected)
    assert got["path"] == got["by-extension"] and got["path"] != got["reader"]  # same clip, same score


def test_a_video_url_goes_through_the_fetcher(engine, clips) -> None:
    fetched: list[str] = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        return clips["red"].read_bytes()

    nodes = [NodeWithScore(node=Node(id_="url", video_resource=MediaResource(url=URL)), score=0.5)]
    got = MiniRerank(model=engine, image_fetcher=fetch).postprocess_nodes(nodes, query_str=QUERY)
    want = engine.rerank(QUERY, [Candidate(videos=[clips["red"].read_bytes()])])
    assert fetched == [URL] and abs(float(got[0].score or 0.0) - want[0].score) <= 1e-6


def test_a_video_url_without_or_with_a_failing_fetcher(engine) -> None:
    nodes = [
        NodeWithScore(node=TextNode(id_="text", text="a red circle"), score=0.9),
        NodeWithScore(node=Node(id_="url", video_resource=MediaResource(url=URL)), score=0.5),
    ]
    with pytest.raises(CandidateError) as caught:
        MiniRerank(model=engine).postprocess_nodes(nodes, query_str=QUERY)
    assert caught.value.index == 1 and caught.value.candidate_id == "url"

    def fail(url: str) -> bytes:
        raise ConnectionError(f"cannot reach {url}")

    with pytest.raises(CandidateError) as caught:
        MiniRerank(model=engine, image_fetcher=fail).postprocess_nodes(nodes, query_str=QUERY)
    assert isinstance(caught.value.cause, VideoLoadError) and "cannot reach" in str(caught.value)
    skipping = MiniRerank(model=engine, top_n=None, on_error="skip", image_fetcher=fail)
    assert [n.node.node_id for n in skipping.postprocess_nodes(nodes, query_str=QUERY)] == ["text"]


def test_an_unreadable_video_is_the_nodes_error(engine, tmp_path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x07" * 200)
    nodes = [
        NodeWithScore(node=TextNode(id_="text", text="a red circle"), score=0.9),
        NodeWithScore(node=Node(id_="broken", video_resource=MediaResource(path=broken)), score=0.5),
    ]
    with pytest.raises(CandidateError) as caught:
        MiniRerank(model=engine).postprocess_nodes(nodes, query_str=QUERY)
    assert caught.value.index == 1 and isinstance(caught.value.cause, VideoLoadError)


def test_a_reader_record_of_a_video_that_is_gone_scores_the_text(engine, caplog) -> None:
    node = TextNode(id_="gone", text="a clip of a red circle", metadata={"file_path": "/nonexistent/clip.mp4"})
    with caplog.at_level(logging.WARNING, logger="llama_index.postprocessor.minirerank"):
        got = MiniRerank(model=engine).postprocess_nodes([NodeWithScore(node=node, score=0.5)], query_str=QUERY)
    want = engine.rerank(QUERY, [Candidate(text=node.get_content(metadata_mode=MetadataMode.EMBED))])
    assert abs(float(got[0].score or 0.0) - want[0].score) <= 1e-6
    assert any("video '/nonexistent/clip.mp4' no longer exists" in r.getMessage() for r in caplog.records)


def test_a_file_path_of_another_type_is_not_a_video(engine, clips) -> None:
    # A declared non-video type wins over the extension: the node is its text.
    node = TextNode(id_="typed", text="a report", metadata={"file_path": str(clips["red"]), "file_type": "text/plain"})
    got = MiniRerank(model=engine).postprocess_nodes([NodeWithScore(node=node, score=0.5)], query_str=QUERY)
    want = engine.rerank(QUERY, [Candidate(text=node.get_content(metadata_mode=MetadataMode.EMBED))])
    assert abs(float(got[0].score or 0.0) - want[0].score) <= 1e-6


def test_video_nodes_pre_cached_at_ingestion_are_hits_at_query_time(fresh_engine, clips) -> None:
    nodes = [
        Node(id_="file", video_resource=MediaResource(path=clips["red"])),
        Node(id_="data", video_resource=MediaResource(data=clips["blue"].read_bytes(), mimetype="video/mp4")),
    ]
    rerank = MiniRerank(model=fresh_engine, top_n=None)
    MiniRerankPrecache(rerank)(nodes)
    assert fresh_engine.counters.prefix_computations == 2
    fresh_engine.counters.reset()
    rerank.postprocess_nodes([NodeWithScore(node=n, score=0.5) for n in nodes], query_str=QUERY)
    assert (fresh_engine.counters.prefix_computations, fresh_engine.counters.prefix_hits) == (0, 2)


def test_precache_refuses_a_remote_postprocessor() -> None:
    remote = MiniRerank(base_url="http://127.0.0.1:9")  # nothing is contacted until a call
    with pytest.raises(ValueError, match=r"scores through a server \(http://127.0.0.1:9\).*POST /v1/precache"):
        MiniRerankPrecache(remote)


def test_a_node_dump_with_a_video_is_read_as_the_postprocessor_reads_it(clips) -> None:
    node = Node(
        id_="dumped", video_resource=MediaResource(path=clips["red"]), text_resource=MediaResource(text="a clip")
    )
    assert candidate_from_dump(node.to_dict(), "line 1") == Candidate(
        text="a clip", id="dumped", videos=(str(clips["red"]),)
    )
