"""``minirerank precache`` through the installed entry point: Redis or a directory, resumable, bad input, Ray."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
