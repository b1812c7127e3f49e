"""Special files as ``image_path`` metadata (FIFOs, sockets, folders, devices) are refused by the engine
without blocking: 'skip' leaves those documents out, 'raise' names them; and copying metadata into the
returned documents never fails on a value that cannot be deep-copied."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from minirerank_integrations import Candidate, CandidateError, MiniReranker

from langchain_minirerank import MiniRerankCompressor


@pytest.fixture
def special() -> Iterator[dict[str, str]]:
    """A FIFO, a folder and a UNIX socket named like images, a link to /dev/zero, a FIFO named like a PDF."""
    folder = Path(tempfile.mkdtemp(prefix="mr-lc-"))  # short: a socket's path is limited to ~100 bytes
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


def _within(seconds: float, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    outcome: dict[str, Any] = {}

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


def _bad_documents(special: dict[str, str]) -> list[Document]:
    return [
        Document(id="fifo", page_content="", metadata={"image_path": special["page.png"]}),
        Document(id="zero link", page_content="a caption", metadata={"image_path": special["zero.png"]}),
        Document(id="dev zero", page_content="", metadata={"image_path": "/dev/zero"}),
        Document(id="urandom uri", page_content="", metadata={"image_path": "file:///dev/urandom"}),
        Document(id="folder", page_content="", metadata={"image_path": special["folder.png"]}),
        Document(id="socket", page_content="", metadata={"image_path": [special["socket.png"]]}),
        Document(id="pdf fifo", page_content="page text", metadata={"source": special["report.pdf"], "page": 0}),
    ]


def test_skip_leaves_special_files_out_without_blocking(
    engine: MiniReranker, image_files: list[Path], special: dict[str, str]
) -> None:
    good = [
        Document(id=f"good-{i}", page_content="", metadata={"image_path": str(p)}) for i, p in enumerate(image_files)
    ]
    documents = [good[0], *_bad_documents(special), *good[1:]]
    compressor = MiniRerankCompressor(model=engine, top_n=None, on_error="skip")

    kept = _within(10, compressor.compress_documents, documents, "a red circle")
    expected = engine.rerank("a red circle", [Candidate(images=[p], id=f"good-{i}") for i, p in enumerate(image_files)])
    assert [d.id for d in kept] == [r.id for r in expected]
    # Tolerance: the same two pairs, but scored in a call of another size (batch order may differ).
    assert [d.metadata["relevance_score"] for d in kept] == pytest.approx([r.score for r in expected], abs=1e-6)

    async def in_the_loop() -> list[Document]:
        return list(await asyncio.wait_for(compressor.acompress_documents(documents, "a red circle"), timeout=10))

    assert [d.id for d in asyncio.run(in_the_loop())] == [d.id for d in kept]


def test_raise_names_the_first_special_file(
    engine: MiniReranker, image_files: list[Path], special: dict[str, str]
) -> None:
    documents = [
        Document(id="good", page_content="", metadata={"image_path": str(image_files[0])}),
        *_bad_documents(special),
    ]
    with pytest.raises(CandidateError, match="FIFO") as caught:
        _within(10, MiniRerankCompressor(model=engine, top_n=None).compress_documents, documents, "a red circle")
    assert caught.value.index == 1 and caught.value.candidate_id == "fifo"


def test_metadata_that_cannot_be_deep_copied_does_not_fail_the_call(engine: MiniReranker) -> None:
    lock = threading.Lock()
    metadata = {"tags": ["red"], "client": lock, "nested": {"pages": [1], "handle": lock}}
    documents = [Document(id=f"d{i}", page_content=f"a red note {i}", metadata=metadata) for i in range(2)]

    kept = MiniRerankCompressor(model=engine, top_n=None).compress_documents(documents, "a red circle")

    assert sorted(d.id for d in kept) == ["d0", "d1"]
    for document in kept:
        assert document.metadata["client"] is lock and document.metadata["nested"]["handle"] is lock
        document.metadata["tags"].append("blue")
        document.metadata["nested"]["pages"].append(2)
    assert metadata == {"tags": ["red"], "client": lock, "nested": {"pages": [1], "handle": lock}}
    assert all("relevance_score" not in d.metadata for d in documents)
