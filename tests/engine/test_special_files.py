"""Special files as images: FIFOs, sockets, directories and devices are refused by type, without blocking
or reading them, through the engine (skip and raise), precache and the CLI; the size cap holds before and
while a file is read."""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import tracemalloc
from pathlib import Path

import pytest
from pictures import drawn_image
from special_files import make_special_files, returns_within

from minirerank_integrations import Candidate, CandidateError, ImageLoadError, MiniReranker, PdfPage
from minirerank_integrations.cli import main
from minirerank_integrations.engine.images import MAX_FILE_BYTES, describe_source, load_image

MiB = 2**20


@pytest.fixture
def specials():
    # A short folder of its own: a UNIX socket's path is limited to about 100 bytes.
    folder = Path(tempfile.mkdtemp(prefix="mr-special-"))
    try:
        yield make_special_files(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pdf_fifo(tmp_path) -> Path:
    path = tmp_path / "report.pdf"
    os.mkfifo(path)
    return path


@pytest.fixture(scope="module")
def paper(tiny4_path):
    return MiniReranker.from_pretrained(tiny4_path, config="paper")


def _png(folder: Path) -> Path:
    path = folder / "good.png"
    drawn_image(64, 64, seed=5).save(path)
    return path


def test_load_image_refuses_every_special_file_by_type_without_reading_it(specials):
    assert {"fifo", "directory", "unix socket", "/dev/zero", "/dev/urandom", "symlink to /dev/zero"} <= set(specials)
    tracemalloc.start()
    try:
        for case, (source, kind) in specials.items():
            for given in (source, Path(source)) if "://" not in source else (source,):
                with pytest.raises(ImageLoadError) as info:
                    returns_within(10, load_image, given)
                message = str(info.value)
                assert kind in message and "not a regular file" in message, (case, message)
                assert message.startswith(describe_source(given)), (case, message)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 * MiB, f"refusing special files allocated {peak} bytes"


def test_a_pdf_page_on_a_fifo_is_refused_without_blocking(pdf_fifo):
    for source in (PdfPage(pdf_fifo, index=0), f"{pdf_fifo}#page=1"):
        with pytest.raises(ImageLoadError, match="not a regular file"):
            returns_within(10, load_image, source)


def test_the_size_cap_holds_before_and_while_reading(tmp_path):
    png = io.BytesIO()
    drawn_image(32, 32, seed=1).save(png, format="PNG")
    exact = tmp_path / "exact.png"
    exact.write_bytes(png.getvalue())
    assert load_image(exact, max_file_bytes=len(png.getvalue())).size == (32, 32)
    with pytest.raises(
        ImageLoadError, match=rf"holds {len(png.getvalue())} bytes, more than the {len(png.getvalue()) - 1}"
    ):
        load_image(exact, max_file_bytes=len(png.getvalue()) - 1)

    sparse = tmp_path / "huge.png"  # a sparse file: its size is a claim, nothing to read is allocated
    with open(sparse, "wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)
    # /proc files are regular files that report size 0 and still hold bytes: only the cap while reading
    # stops them (as it stops a file that grows after it was checked).
    status = "/proc/self/status"
    tracemalloc.start()
    try:
        with pytest.raises(ImageLoadError, match=f"holds {MAX_FILE_BYTES + 1} bytes, more than the {MAX_FILE_BYTES}"):
            load_image(sparse)
        with pytest.raises(ImageLoadError, match="more than 64 bytes read from the file"):
            load_image(status, max_file_bytes=64)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 * MiB, f"the size cap let {peak} bytes be allocated"
    with pytest.raises(ImageLoadError, match="more than 10 bytes"):
        load_image("http://example.com/a.png", fetcher=lambda url: b"x" * 11, max_file_bytes=10)


def test_rerank_and_precache_skip_special_files_with_a_reason(paper, specials, pdf_fifo, tmp_path):
    good = Candidate(images=[str(_png(tmp_path))], id="good")
    bad = {case: source for case, (source, _) in specials.items()}
    bad |= {"fifo as a Path": Path(specials["fifo"][0]), "PDF page on a FIFO": PdfPage(pdf_fifo, index=0)}
    candidates = [good] + [Candidate(images=[source], id=case) for case, source in bad.items()]

    results = returns_within(10, paper.rerank, "a red circle", candidates, on_error="skip")
    assert [r.id for r in results] == ["good"]
    assert [s.id for s in results.skipped] == list(bad)
    kinds = {case: kind for case, (_, kind) in specials.items()}
    for skipped in results.skipped:
        assert "not a regular file" in skipped.error and kinds.get(skipped.id, "") in skipped.error, skipped
    assert results[0].score == pytest.approx(paper.rerank("a red circle", [good])[0].score, abs=1e-6)

    report = returns_within(10, paper.precache, candidates, on_error="skip", progress=False)
    assert report[0].status in ("stored", "present") and [o.status for o in report[1:]] == ["skipped"] * len(bad)
    assert all("not a regular file" in o.reason for o in report[1:])
    with pytest.raises(CandidateError) as info:
        returns_within(10, paper.rerank, "a red circle", candidates)
    assert info.value.index == 1 and "FIFO" in str(info.value)


def test_cli_rerank_skip_bad_leaves_special_files_out(tiny4_path, specials, tmp_path, capsys):
    good = str(_png(tmp_path))
    images = [arg for source, _ in specials.values() for arg in ("--image", source)]
    argv = ["rerank", "--model", str(tiny4_path), "--query", "a red circle", "--image", good, *images]
    assert returns_within(60, main, [*argv, "--skip-bad", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [row["id"] for row in document["results"]] == [good]
    assert [s["id"] for s in document["skipped"]] == [source for source, _ in specials.values()]
    assert all("not a regular file" in s["error"] for s in document["skipped"])

    assert returns_within(60, main, argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert captured.err.count("\n") == 1 and "candidate 1" in captured.err and "FIFO" in captured.err


def test_read_image_file_reads_as_load_image_does(specials, tmp_path):
    from minirerank_integrations.engine.images import read_image_file

    good = _png(tmp_path)
    assert read_image_file(good) == good.read_bytes()
    with pytest.raises(ImageLoadError, match=r"holds \d+ bytes, more than the 10"):
        read_image_file(good, max_bytes=10)
    for source, kind in (value for case, value in specials.items() if "://" not in value[0]):
        with pytest.raises(ImageLoadError, match=kind):
            returns_within(10, read_image_file, Path(source))


def test_the_remote_client_reads_files_as_the_engine_does(specials):
    from minirerank_integrations.serve.client import RemoteReranker

    client = RemoteReranker("http://127.0.0.1:9")  # never reached: the files are refused while the body is built
    for source, kind in (value for case, value in specials.items() if "://" not in value[0]):
        with pytest.raises(CandidateError, match=kind) as info:
            returns_within(10, client.rerank, "a red circle", [Candidate(images=[Path(source)])])
        assert isinstance(info.value.cause, ImageLoadError)
