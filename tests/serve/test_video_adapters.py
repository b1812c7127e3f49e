"""Both adapters' remote mode with videos against a real server: the same results as the local engine, sync and async;
a video URL goes to the server as a URL and is fetched there under its host rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.documents import Document
from langchain_minirerank import MiniRerankCompressor
from llama_index.core.schema import MediaResource, Node, NodeWithScore, QueryBundle, TextNode
from llama_index.postprocessor.minirerank import MiniRerank
from serve.test_video_parts import clips, video_host  # noqa: F401  (fixtures: the clips and a host serving one)

from minirerank_integrations import CandidateError

QUERY = "a red circle moving right"


def _nodes(videos: dict[str, Path]) -> list[NodeWithScore]:
    nodes = [
        Node(id_="file", video_resource=MediaResource(path=videos["red"])),
        TextNode(id_="text", text="a red circle on a white page"),
        Node(
            id_="data",
            video_resource=MediaResource(data=videos["blue"].read_bytes(), mimetype="video/mp4"),
            text_resource=MediaResource(text="a blue clip"),
        ),
    ]
    return [NodeWithScore(node=node, score=0.5) for node in nodes]


def _same_nodes(local: list[NodeWithScore], remote: list[NodeWithScore]) -> None:
    assert [n.node.node_id for n in remote] == [n.node.node_id for n in local]
    assert all(abs(float(r.score or 0) - float(e.score or 0)) <= 1e-5 for r, e in zip(remote, local, strict=True))


def _documents(videos: dict[str, Path]) -> list[Document]:
    return [
        Document(id="file", page_content="", metadata={"video_path": str(videos["red"])}),
        Document(id="text", page_content="a red circle on a white page"),
        Document(id="uri", page_content="a blue clip", metadata={"video_path": videos["blue"].as_uri()}),
    ]


def _same_documents(local: list[Document], remote: list[Document]) -> None:
    assert [d.id for d in remote] == [d.id for d in local]
    assert all(
        abs(r.metadata["relevance_score"] - e.metadata["relevance_score"]) <= 1e-5
        for r, e in zip(remote, local, strict=True)
    )


def test_llama_index_remote_videos_equal_local(server, local_engine, clips) -> None:  # noqa: F811
    bundle = QueryBundle(query_str=QUERY)
    expected = MiniRerank(model=local_engine, top_n=None).postprocess_nodes(_nodes(clips), query_bundle=bundle)
    assert len({n.score for n in expected}) == 3  # the videos are scored
    remote = MiniRerank(base_url=server.url, top_n=None)
    _same_nodes(expected, remote.postprocess_nodes(_nodes(clips), query_bundle=bundle))


async def test_llama_index_remote_videos_async(server, local_engine, clips) -> None:  # noqa: F811
    bundle = QueryBundle(query_str=QUERY)
    expected = await MiniRerank(model=local_engine, top_n=2).apostprocess_nodes(_nodes(clips), query_bundle=bundle)
    got = await MiniRerank(base_url=server.url, top_n=2).apostprocess_nodes(_nodes(clips), query_bundle=bundle)
    _same_nodes(expected, got)


def test_langchain_remote_videos_equal_local(server, local_engine, clips) -> None:  # noqa: F811
    documents = _documents(clips)
    local = MiniRerankCompressor(model=local_engine, top_n=None).compress_documents(documents, QUERY)
    remote = MiniRerankCompressor(base_url=server.url, top_n=None).compress_documents(documents, QUERY)
    _same_documents(local, remote)


async def test_langchain_remote_videos_async(server, local_engine, clips) -> None:  # noqa: F811
    documents = _documents(clips)
    local = await MiniRerankCompressor(model=local_engine, top_n=2).acompress_documents(documents, QUERY)
    remote = await MiniRerankCompressor(base_url=server.url, top_n=2).acompress_documents(documents, QUERY)
    _same_documents(local, remote)


def test_remote_video_urls_are_fetched_by_the_server(start_server, local_engine, clips, video_host) -> None:  # noqa: F811
    running = start_server(allowed_image_hosts=("localhost",), allow_private_addresses=True)
    documents = [
        Document(id="text", page_content="a red circle on a white page"),
        Document(id="url", page_content="", metadata={"video_url": f"{video_host}/red.mp4"}),
    ]
    remote = MiniRerankCompressor(base_url=running.url, top_n=None).compress_documents(documents, QUERY)
    local_documents = [documents[0], Document(id="url", page_content="", metadata={"video_path": str(clips["red"])})]
    local = MiniRerankCompressor(model=local_engine, top_n=None).compress_documents(local_documents, QUERY)
    _same_documents(local, remote)

    nodes = [NodeWithScore(node=Node(id_="url", video_resource=MediaResource(url=f"{video_host}/absent.mp4")))]
    with pytest.raises(CandidateError) as raised:
        MiniRerank(base_url=running.url).postprocess_nodes(nodes, query_str=QUERY)
    assert raised.value.index == 0 and raised.value.candidate_id == "url" and "HTTP 404" in str(raised.value)
