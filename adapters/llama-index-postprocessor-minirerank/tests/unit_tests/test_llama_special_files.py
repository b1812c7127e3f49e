"""Special files named as node images (FIFOs, sockets, folders, devices) are refused by the engine without
blocking: 'skip' leaves those nodes out, 'raise' names them; and the returned nodes never share metadata
with the caller's."""

import asyncio
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from llama_index.core.schema import ImageNode, NodeWithScore, TextNode
from minirerank_integrations import CandidateError

from llama_index.postprocessor.minirerank import MiniRerank


@pytest.fixture
def special() -> Iterator[dict[str, str]]:
    """A FIFO, a folder and a UNIX socket named like images, a link to /dev/zero, and /dev/urandom."""
    folder = Path(tempfile.mkdtemp(prefix="mr-llama-"))  # short: a socket's path is limited to ~100 bytes
    os.mkfifo(folder / "page.png")
    os.mkfifo(folder / "report.pdf")
    (folder / "folder.png").mkdir()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(folder / "socket.png"))
    (folder / "zero.png").symlink_to("/dev/zero")
    try:
        yield {name: str(folder / name) for name in ("page.png", "report.pdf", "folder.png", "socket.png", "zero.png")}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _bad_nodes(special: dict[str, str]) -> list[NodeWithScore]:
    nodes = [
        ImageNode(id_="image_path fifo", image_path=special["page.png"]),
        ImageNode(id_="image_path urandom", image_path="/dev/urandom"),
        TextNode(id_="file_path fifo", text="", metadata={"file_path": special["page.png"], "file_type": "image/png"}),
        TextNode(id_="file_path zero link", text="a caption", metadata={"file_path": special["zero.png"]}),
        TextNode(id_="file_path folder", text="", metadata={"file_path": special["folder.png"]}),
        TextNode(id_="file_path socket", text="", metadata={"file_path": special["socket.png"]}),
        TextNode(
            id_="pdf page fifo", text="page text", metadata={"file_path": special["report.pdf"], "page_label": "1"}
        ),
    ]
    return [NodeWithScore(node=node, score=0.5) for node in nodes]


def _within(seconds: float, function, *args, **kwargs):
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = function(*args, **kwargs)
        except BaseException as error:
            outcome["error"] = error

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds} s (blocked on a special file?)"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_skip_leaves_special_files_out_without_blocking(engine, image_nodes, special, expect, ranked, caplog) -> None:
    bad = _bad_nodes(special)
    nodes = [image_nodes[0], *bad, *image_nodes[1:]]
    reranker = MiniRerank(model=engine, top_n=None, on_error="skip")

    with caplog.at_level("WARNING"):
        result = _within(10, reranker.postprocess_nodes, nodes, query_str="red")
    expected = expect(engine, "red", image_nodes, top_n=None)
    assert [node_id for node_id, _ in ranked(result)] == [node_id for node_id, _ in expected]
    # Tolerance: the same pairs, but scored in a call of another size (batch order may differ).
    assert [score for _, score in ranked(result)] == pytest.approx([score for _, score in expected], abs=1e-6)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for scored in bad:
        assert scored.node.node_id in logged
    assert logged.count("not a regular file") >= len(bad)

    async def in_the_loop():
        return await asyncio.wait_for(reranker.apostprocess_nodes(nodes, query_str="red"), timeout=10)

    assert [node_id for node_id, _ in ranked(asyncio.run(in_the_loop()))] == [node_id for node_id, _ in expected]


def test_raise_names_the_first_special_file(engine, image_nodes, special) -> None:
    nodes = [image_nodes[0], *_bad_nodes(special)]
    with pytest.raises(CandidateError, match="FIFO") as caught:
        _within(10, MiniRerank(model=engine, on_error="raise").postprocess_nodes, nodes, query_str="red")
    assert caught.value.index == 1 and caught.value.candidate_id == "image_path fifo"


def test_returned_nodes_share_no_metadata_with_the_inputs(engine, image_nodes) -> None:
    lock = threading.Lock()  # cannot be deep-copied: kept as the same object, the call still succeeds
    metadata = {"tags": ["red"], "source": {"pages": [1, 2]}, "lock": lock, "mixed": [{"n": 1}, lock]}
    nodes = [
        NodeWithScore(
            node=TextNode(id_=f"t{i}", text=f"a red note {i}", metadata=metadata, excluded_llm_metadata_keys=["tags"]),
            score=0.5,
        )
        for i in range(2)
    ]
    result = MiniRerank(model=engine, top_n=None).postprocess_nodes([*nodes, *image_nodes], query_str="red")

    for scored in result:
        if not scored.node.node_id.startswith("t"):
            continue
        copied = scored.node.metadata
        copied["tags"].append("blue")
        copied["source"]["pages"].append(3)
        copied["mixed"][0]["n"] = 2
        scored.node.excluded_llm_metadata_keys.append("source")
        assert copied["lock"] is lock and copied["mixed"][1] is lock
    assert metadata == {"tags": ["red"], "source": {"pages": [1, 2]}, "lock": lock, "mixed": [{"n": 1}, lock]}
    assert all(n.node.excluded_llm_metadata_keys == ["tags"] for n in nodes)
