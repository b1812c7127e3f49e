"""Both adapters' remote mode against a real server: the same results as the local engine, sync and async, with
text, base64 images and image files."""

from __future__ import annotations

import base64

import pytest
from langchain_core.documents import Document
from langchain_minirerank import MiniRerankCompressor
from llama_index.core.schema import ImageNode, NodeWithScore, QueryBundle, TextNode
from llama_index.postprocessor.minirerank import MiniRerank
from pictures import drawn_image
from serve.wire import png_bytes

from minirerank_integrations import CandidateError

QUERY = "round shapes"


@pytest.fixture(scope="module")
def picture_files(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("pictures")
    paths = []
    for seed, (width, height) in enumerate([(64, 64), (96, 64), (64, 96)]):
        path = folder / f"page{seed}.png"
        drawn_image(width, height, 20 + seed).save(path)
        paths.append(str(path))
    return paths


def _nodes(picture_files) -> list[NodeWithScore]:
    encoded = base64.b64encode(png_bytes(drawn_image(96, 96, 30))).decode()
    nodes = [
        TextNode(id_="text-circles", text="circles on a plain background"),
        ImageNode(id_="image-file-0", image_path=picture_files[0]),
        TextNode(id_="text-table", text="a table of quarterly numbers"),
        ImageNode(id_="image-base64", image=encoded, image_mimetype="image/png"),
        ImageNode(id_="image-file-1", image_path=picture_files[1]),
    ]
    return [NodeWithScore(node=node, score=0.5) for node in nodes]


def _same(local, remote) -> None:
    assert [n.node.node_id for n in remote] == [n.node.node_id for n in local]
    assert all(abs(r.score - e.score) <= 1e-5 for r, e in zip(remote, local))


def test_llama_index_remote_mode_equals_local(server, local_engine, picture_files) -> None:
    local = MiniRerank(model=local_engine, top_n=None)
    remote = MiniRerank(base_url=server.url, top_n=None)
    bundle = QueryBundle(query_str=QUERY)
    expected = local.postprocess_nodes(_nodes(picture_files), query_bundle=bundle)
    _same(expected, remote.postprocess_nodes(_nodes(picture_files), query_bundle=bundle))
    assert remote.to_dict()["base_url"] == server.url and "api_key" not in remote.to_dict()


async def test_llama_index_remote_mode_async(server, local_engine, picture_files) -> None:
    local = MiniRerank(model=local_engine, top_n=3)
    remote = MiniRerank(base_url=server.url, top_n=3)
    bundle = QueryBundle(query_str=QUERY)
    expected = await local.apostprocess_nodes(_nodes(picture_files), query_bundle=bundle)
    got = await remote.apostprocess_nodes(_nodes(picture_files), query_bundle=bundle)
    assert len(got) == 3
    _same(expected, got)


def test_llama_index_remote_mode_refuses_local_options(server) -> None:
    with pytest.raises(ValueError, match="device only apply"):
        MiniRerank(base_url=server.url, device="cpu")


def _documents(picture_files) -> list[Document]:
    encoded = base64.b64encode(png_bytes(drawn_image(64, 64, 31))).decode()
    return [
        Document(page_content="circles on a plain background", metadata={"source": "a"}),
        Document(page_content=encoded, metadata={"mime_type": "image/png"}),
        Document(page_content="a caption", metadata={"image_path": picture_files[2]}),
        Document(page_content="a table of quarterly numbers"),
    ]


def _same_documents(local, remote) -> None:
    assert [d.page_content for d in remote] == [d.page_content for d in local]
    assert all(
        abs(r.metadata["relevance_score"] - e.metadata["relevance_score"]) <= 1e-5 for r, e in zip(remote, local)
    )


def test_langchain_remote_mode_equals_local(server, local_engine, picture_files) -> None:
    local = MiniRerankCompressor(model=local_engine, top_n=None)
    remote = MiniRerankCompressor(base_url=server.url, top_n=None)
    documents = _documents(picture_files)
    _same_documents(local.compress_documents(documents, QUERY), remote.compress_documents(documents, QUERY))


async def test_langchain_remote_mode_async(server, local_engine, picture_files) -> None:
    local = MiniRerankCompressor(model=local_engine, top_n=2)
    remote = MiniRerankCompressor(base_url=server.url, top_n=2)
    documents = _documents(picture_files)
    got = await remote.acompress_documents(documents, QUERY)
    assert len(got) == 2
    _same_documents(await local.acompress_documents(documents, QUERY), got)


def test_remote_bad_document_names_it(server) -> None:
    remote = MiniRerankCompressor(base_url=server.url, top_n=None)
    documents = [Document(page_content="fine"), Document(page_content="   ")]
    with pytest.raises(CandidateError) as raised:
        remote.compress_documents(documents, QUERY)
    assert raised.value.index == 1
    skipping = MiniRerankCompressor(base_url=server.url, top_n=None, on_error="skip")
    assert [d.page_content for d in skipping.compress_documents(documents, QUERY)] == ["fine"]
