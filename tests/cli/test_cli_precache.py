"""``minirerank precache`` through the installed entry point: Redis or a directory, resumable, bad input, Ray."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pictures import drawn_image

from minirerank_integrations import Candidate, MiniReranker
from minirerank_integrations.scale import read_documents

MINIRERANK = str(Path(sys.executable).parent / "minirerank")


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([MINIRERANK, *args], capture_output=True, text=True, timeout=timeout)


def _corpus(folder: Path) -> Path:
    pages = folder / "pages"
    pages.mkdir()
    for i in range(3):
        drawn_image(48 + 16 * i, 48, seed=40 + i).save(pages / f"page{i}.png")
    lines = [{"id": "t0", "text": "a note about circles"}, {"id": "i0", "text": "caption", "image": "pages/page0.png"}]
    (folder / "docs.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    return pages


def test_precache_into_redis_is_resumable_and_serves_every_document(redis_server, tiny4_path, tmp_path):
    pages = _corpus(tmp_path)
    args = ("precache", str(pages), str(tmp_path / "docs.jsonl"), "--model", str(tiny4_path))
    first = _run(*args, "--cache-url", redis_server.url, "--no-progress")
    assert first.returncode == 0, first.stderr
    assert "documents: 5 (5 stored, 0 already stored, 0 failed)" in first.stdout
    assert "documents/s" in first.stdout
    again = _run(*args, "--cache-url", redis_server.url, "--no-progress")
    assert again.returncode == 0 and "(0 stored, 5 already stored, 0 failed)" in again.stdout
    reader = MiniReranker.from_pretrained(tiny4_path, config="paper", cache_url=redis_server.url)
    reader.rerank("a red circle", read_documents([pages, tmp_path / "docs.jsonl"]))
    assert (reader.counters.prefix_hits, reader.counters.prefix_computations) == (5, 0)


def test_rerank_reads_the_namespace_and_precision_precache_wrote(redis_server, tiny4_path, tmp_path):
    pages = _corpus(tmp_path)
    store = ("--cache-url", redis_server.url, "--cache-namespace", "team-a", "--cache-storage", "bfloat16")
    filled = _run("precache", str(pages), "--model", str(tiny4_path), "--config", "paper", *store, "--no-progress")
    assert filled.returncode == 0, filled.stderr
    images = [arg for path in sorted(pages.iterdir()) for arg in ("--image", str(path))]
    query = ("rerank", "--model", str(tiny4_path), "--config", "paper", "--query", "a red circle", "--json", *images)

    served = _run(*query, *store)
    assert served.returncode == 0, served.stderr
    assert json.loads(served.stdout)["prefixes"] == {"served": 3, "computed": 0}
    other = _run(*query, "--cache-url", redis_server.url, "--cache-storage", "bfloat16")  # default namespace
    assert json.loads(other.stdout)["prefixes"] == {"served": 0, "computed": 3}
    again = _run(*query, "--cache-url", redis_server.url, "--cache-storage", "bfloat16")  # now stored there too
    assert json.loads(again.stdout)["prefixes"] == {"served": 3, "computed": 0}
    scores = [r["score"] for r in json.loads(served.stdout)["results"]]
    assert scores == [r["score"] for r in json.loads(again.stdout)["results"]]  # the same bfloat16 prefixes


def test_bad_input_is_one_line_and_failed_documents_are_listed(tiny4_path, tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"id": "a", "text": "fine"}\n{oops\n', encoding="utf-8")
    cache = str(tmp_path / "cache")
    broken = _run("precache", str(tmp_path / "bad.jsonl"), "--model", str(tiny4_path), "--cache-dir", cache)
    assert broken.returncode == 2
    assert broken.stderr.strip().splitlines()[-1].startswith("minirerank: ")
    assert "bad.jsonl:2: not a JSON object" in broken.stderr and "Traceback" not in broken.stderr
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"id": "ok", "text": "fine"}\n{"id": "gone", "image": "nowhere.png"}\n', encoding="utf-8")
    partial = _run("precache", str(missing), "--model", str(tiny4_path), "--cache-dir", cache, "--no-progress")
    assert partial.returncode == 1, partial.stderr
    assert "(1 stored, 0 already stored, 1 failed)" in partial.stdout
    assert "failed: document 1 (gone):" in partial.stdout and "nowhere.png" in partial.stdout
    no_store = _run("precache", str(missing), "--model", str(tiny4_path))
    assert no_store.returncode == 2 and "--cache-dir" in no_store.stderr


def test_help_lists_the_options():
    shown = _run("precache", "--help", timeout=60)
    assert shown.returncode == 0
    for option in ("--cache-dir", "--cache-url", "--ray", "--workers", "JSONL"):
        assert option in shown.stdout


def test_precache_on_ray_from_the_command_line(tiny4_path, tmp_path):
    pages = tmp_path / "pages"
    pages.mkdir()
    for i in range(3):
        drawn_image(48, 48, seed=60 + i).save(pages / f"page{i}.png")
    cache = tmp_path / "cache"
    done = _run(
        "precache", str(pages), "--model", str(tiny4_path), "--cache-dir", str(cache), "--ray", "--workers", "1",
        "--no-progress",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(3 stored, 0 already stored, 0 failed)" in done.stdout and "1 worker(s)" in done.stdout
    reader = MiniReranker.from_pretrained(tiny4_path, config="paper", cache_dir=cache)
    reader.rerank("a red circle", [Candidate(images=[str(p)]) for p in sorted(pages.iterdir())])
    assert reader.counters.prefix_hits == 3


def _locked_pdf(path: Path) -> Path:
    import pypdf  # a dependency of the LlamaIndex adapter's PDF reader
    from PIL import Image

    from minirerank_integrations.testing import write_pdf

    plain = write_pdf(path.with_name("plain-source.pdf.tmp"), [Image.new("RGB", (96, 96), (30, 30, 200))])
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(plain))
    writer.encrypt(user_password="secret", algorithm="RC4-128")  # RC4 needs no crypto library
    with open(path, "wb") as handle:
        writer.write(handle)
    return path


def test_an_unreadable_file_in_a_folder_fails_alone_and_the_rest_is_stored(tiny4_path, tmp_path, capsys):
    from minirerank_integrations.cli import main

    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(2):
        drawn_image(48 + 16 * i, 48, seed=70 + i).save(folder / f"page{i}.png")
    (folder / "note.txt").write_text("a note about circles", encoding="utf-8")
    (folder / "latin.txt").write_bytes("caf\u00e9".encode("latin-1"))
    _locked_pdf(folder / "locked.pdf")
    cache = str(tmp_path / "cache")
    argv = ["precache", str(folder), "--model", str(tiny4_path), "--cache-dir", cache, "--no-progress"]

    assert main(argv) == 1
    first = capsys.readouterr()
    assert "Traceback" not in first.err
    assert "documents: 5 (3 stored, 0 already stored, 2 failed)" in first.out
    assert f"failed: document 0 ({folder / 'latin.txt'}): " in first.out and "not UTF-8 text" in first.out
    assert f"failed: document 1 ({folder / 'locked.pdf'}): " in first.out and "Incorrect password" in first.out
    assert main(argv) == 1
    assert "documents: 5 (0 stored, 3 already stored, 2 failed)" in capsys.readouterr().out
    reader = MiniReranker.from_pretrained(tiny4_path, config="paper", cache_dir=cache)
    readable = [Candidate(text="a note about circles")] + [
        Candidate(images=[str(folder / f"page{i}.png")]) for i in range(2)
    ]
    reader.rerank("a red circle", readable)
    assert (reader.counters.prefix_hits, reader.counters.prefix_computations) == (3, 0)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"id": "a", "text": "caf\xe9"}', "docs.jsonl:1: not UTF-8 text"),
        (b'{"id": "a", "images": "abc"}', 'docs.jsonl:1: "images" must be a list'),
        (b'{"page_content": "x", "metadata": ["image_path"]}', "docs.jsonl:1: not a LangChain Document: metadata"),
        (b'{"id_": "n", "text": 7}', "docs.jsonl:1: not a LlamaIndex node: text"),
    ],
)
def test_a_malformed_dump_is_one_line_on_stderr(tiny4_path, tmp_path, capsys, line, message):
    from minirerank_integrations.cli import main

    (tmp_path / "docs.jsonl").write_bytes(line + b"\n")
    argv = ["precache", str(tmp_path / "docs.jsonl"), "--model", str(tiny4_path), "--cache-dir", str(tmp_path / "c")]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("minirerank: ") and message in captured.err


def test_ctrl_c_exits_130_saying_what_was_stored(redis_server, tiny4_path, tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    for i in range(400):  # far more than are stored before the interrupt arrives
        (folder / f"note{i:03}.txt").write_text(f"note {i}: " + "circles and squares " * (1 + i % 7), encoding="utf-8")
    argv = [MINIRERANK, "precache", str(folder), "--model", str(tiny4_path), "--cache-url", redis_server.url]
    process = subprocess.Popen([*argv, "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = redis_server.client()
    try:
        deadline = time.monotonic() + 180  # loading torch and the model is slow on a busy machine
        while len(list(client.scan_iter("minirerank:prefix:*"))) < 3:  # the first documents are stored
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "not three documents stored within 180 s"
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, err[-3000:]
    assert "Traceback" not in err and out == ""
    last = err.strip().splitlines()[-1]
    match = re.fullmatch(
        r"minirerank: interrupted after storing (\d+) document prefix(?:es)? \(\d+\.\d MiB\); run the same command "
        r"again to resume \(stored documents are skipped\)",
        last,
    )
    assert match, last
    stored = len(list(client.scan_iter("minirerank:prefix:*")))
    # The count is of writes the server confirmed: one whose reply the interrupt cut off is stored, uncounted.
    assert int(match[1]) in (stored, stored - 1) and 3 <= stored < 400


def test_a_text_file_over_max_file_bytes_fails_alone_naming_the_cap(tiny4_path, tmp_path, capsys):
    from minirerank_integrations.cli import main

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "long.txt").write_text("a note about circles, squares and triangles", encoding="utf-8")  # 43 bytes
    (folder / "short.txt").write_text("a red circle", encoding="utf-8")
    argv = ["precache", str(folder), "--model", str(tiny4_path), "--cache-dir", str(tmp_path / "cache")]
    assert main([*argv, "--no-progress", "--max-file-bytes", "32"]) == 1
    out = capsys.readouterr().out
    assert "documents: 2 (1 stored, 0 already stored, 1 failed)" in out
    assert f"failed: document 0 ({folder / 'long.txt'}): " in out and "over the 32-byte cap" in out
    assert main([*argv, "--no-progress"]) == 0  # the default cap (256 MiB) reads it
    assert "documents: 2 (1 stored, 1 already stored, 0 failed)" in capsys.readouterr().out
