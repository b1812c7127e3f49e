"""Nodes that cannot be scored follow on_error: 'raise' names them, 'skip' leaves them out and logs them."""

import logging

import pytest
from llama_index.core.schema import ImageNode, NodeWithScore, TextNode
from minirerank_integrations import CandidateError, ImageLoadError

from llama_index.postprocessor.minirerank import MiniRerank

BAD_NODES = {
    "corrupt-b64": lambda: ImageNode(id_="corrupt-b64", image="bm90IGFuIGltYWdl", image_mimetype="image/png"),
    "not-b64": lambda: ImageNode(id_="not-b64", image="%%% not base64 %%%"),
    "missing-file": lambda: ImageNode(id_="missing-file", image_path="/nonexistent/page.png"),
    "url-no-fetcher": lambda: ImageNode(id_="url-no-fetcher", image_url="https://images.example/a.png"),
    "empty-text": lambda: TextNode(id_="empty-text", text="", metadata={"title": "metadata is not content"}),
    "empty-image-node": lambda: ImageNode(id_="empty-image-node", metadata={"file_name": "nothing.png"}),
}


def _with_bad(image_nodes, bad_id: str) -> list[NodeWithScore]:
    return [*image_nodes[:2], NodeWithScore(node=BAD_NODES[bad_id](), score=0.9), *image_nodes[2:]]


@pytest.mark.parametrize("bad_id", sorted(BAD_NODES))
def test_raise_names_the_node(engine, image_nodes, bad_id) -> None:
    nodes = _with_bad(image_nodes, bad_id)

    with pytest.raises(CandidateError) as caught:
        MiniRerank(model=engine, on_error="raise").postprocess_nodes(nodes, query_str="red")

    assert caught.value.index == 2
    assert caught.value.candidate_id == bad_id


@pytest.mark.parametrize("bad_id", ["corrupt-b64", "empty-text", "url-no-fetcher"])
def test_skip_leaves_the_node_out(engine, image_nodes, expect, ranked, caplog, bad_id) -> None:
    nodes = _with_bad(image_nodes, bad_id)

    with caplog.at_level(logging.WARNING, logger="llama_index.postprocessor.minirerank"):
        result = MiniRerank(model=engine, top_n=None, on_error="skip").postprocess_nodes(nodes, query_str="red")

    assert ranked(result) == expect(engine, "red", image_nodes, top_n=None)
    assert any(bad_id in record.getMessage() for record in caplog.records)


def test_failing_fetcher(engine, image_nodes, expect, ranked) -> None:
    def fetch(url: str) -> bytes:
        raise ConnectionError(f"cannot reach {url}")

    nodes = _with_bad(image_nodes, "url-no-fetcher")

    with pytest.raises(CandidateError) as caught:
        MiniRerank(model=engine, image_fetcher=fetch).postprocess_nodes(nodes, query_str="red")
    assert caught.value.index == 2
    assert isinstance(caught.value.cause, ImageLoadError)
    assert "cannot reach" in str(caught.value)

    skipping = MiniRerank(model=engine, top_n=None, on_error="skip", image_fetcher=fetch)
    assert ranked(skipping.postprocess_nodes(nodes, query_str="red")) == expect(engine, "red", image_nodes, top_n=None)
