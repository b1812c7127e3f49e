"""Ingestion with and without the writer thread: documents/s of ``precache`` into a directory store.

``StoreConfig(write_behind=True)`` moves each entry's encoding (checksum, int8 quantization) and its write
(a value file, a SQLite transaction) from the scoring thread to a writer thread, so the next document's
prefix is computed while the last one is written. This measures, in one process and on the same documents:

* ``in place``: ``precache`` into a directory store that encodes and writes on the scoring thread;
* ``write-behind``: the same with ``write_behind=True``; ``precache`` flushes the queue before it returns,
  so the time counts every write, and its report counts only entries the directory holds;
* ``store share``: the scoring thread's time per document to encode and write the entries that run
  produced, measured apart (the most the writer thread can take off the scoring thread).

The runs alternate (in place, write-behind, ...) so a change of load on a shared machine reaches both. The
model is the embedded demo model (real weights, real pages, real prefixes): the 2B shape ingests a document in
13 to 64 s on one core here (``docs/bench/README.md``), where the 18-80 ms of store work per document would be
lost in the noise; the demo model's small compute is where the overlap can show on a CPU. torch runs on one
thread (``--threads``) so that the writer thread has the other core.

    python -m minirerank_integrations.bench.ingest [--documents 32] [--repeats 3] [--out docs/bench/ingest_cpu.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ..demo_model import DEMO_MODEL
from ..engine.inputs import Candidate
from ..engine.reranker import MiniReranker
from ..store import DiskPrefixStore, StoreConfig, open_store
from ..store.precision import Storage
from .capacity import pages
from .outputs import report


def _precache_seconds(
    engine: MiniReranker, docs: list[Candidate], directory: Path, storage: Storage, write_behind: bool
) -> tuple[float, list[str]]:
    """Seconds of one ``precache`` of ``docs`` into a fresh directory store (flushed when it returns), and
    the keys it stored."""
    settings = StoreConfig(dir=str(directory), storage=storage, memory_limit=0, write_behind=write_behind)
    engine.store = open_store(settings)
    start = time.perf_counter()
    report = engine.precache(docs, progress=False)
    seconds = time.perf_counter() - start
    engine.store.close()
    if report.stored != len(docs):
        raise RuntimeError(f"precache stored {report.stored} of {len(docs)} documents ({report!r})")
    return seconds, [outcome.key for outcome in report if outcome.key is not None]


def _store_share(directory: Path, keys: list[str], storage: Storage, scratch: Path) -> tuple[float, int]:
    """Seconds per entry to encode and write (in place) the entries a run stored, and their mean bytes."""
    source = DiskPrefixStore(directory, storage=storage)
    entries = [source.get(key) for key in keys]
    target = DiskPrefixStore(scratch, storage=storage)
    start = time.perf_counter()
    for key, entry in zip(keys, entries):
        assert entry is not None
        target.put(key, entry)
    seconds = (time.perf_counter() - start) / len(keys)
    stored = target.stats.bytes_written // len(keys)
    source.close()
    target.close()
    return seconds, stored


def run_ingest_bench(documents: int, repeats: int, page_size: int, storage: Storage) -> dict[str, Any]:
    """Every run of both modes, alternating, on the same documents and engine."""
    work = Path(tempfile.mkdtemp(prefix="minirerank-ingest-bench-"))
    try:
        docs = pages(work, documents, page_size)
        engine = MiniReranker.from_pretrained(DEMO_MODEL, device="cpu")
        _precache_seconds(engine, docs[:2], work / "warm", storage, write_behind=False)  # lazy loads, allocator
        times: dict[str, list[float]] = {"in_place": [], "write_behind": []}
        keys: list[str] = []
        for repeat in range(repeats):
            for mode in ("in_place", "write_behind"):
                directory = work / f"{mode}-{repeat}"
                seconds, keys = _precache_seconds(engine, docs, directory, storage, mode == "write_behind")
                times[mode].append(seconds)
        share, entry_bytes = _store_share(work / "in_place-0", keys, storage, work / "share")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best = {mode: min(values) for mode, values in times.items()}
    median = {mode: statistics.median(values) for mode, values in times.items()}
    return {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
        },
        "model": DEMO_MODEL,
        "documents": documents,
        "page_size": page_size,
        "storage": storage,
        "entry_bytes": entry_bytes,
        "seconds": times,
        "documents_per_s_median": {mode: round(documents / s, 3) for mode, s in median.items()},
        "documents_per_s_best": {mode: round(documents / s, 3) for mode, s in best.items()},
        "write_behind_over_in_place_median": round(median["in_place"] / median["write_behind"], 3),
        "store_share_ms_per_document": round(share * 1e3, 3),
        "compute_ms_per_document_best_in_place": round(best["in_place"] / documents * 1e3 - share * 1e3, 3),
    }


def render(result: dict[str, Any]) -> str:
    rate, best = result["documents_per_s_median"], result["documents_per_s_best"]
    return "\n".join(
        [
            f"ingestion (precache into a directory store), {result['model']}, {result['documents']} pages of "
            f"{result['page_size']}x{result['page_size']}, stored as {result['storage']} "
            f"({result['entry_bytes'] / 1e3:.1f} kB per entry); {result['machine']['cpus']} CPUs, "
            f"{result['machine']['torch_threads']} torch thread(s), load {result['machine']['load_average']}",
            "",
            f"{'mode':>14} | {'docs/s median':>13} {'docs/s best':>11} | seconds per run",
            *(
                f"{mode.replace('_', ' '):>14} | {rate[mode]:>13.3f} {best[mode]:>11.3f} | "
                + ", ".join(f"{s:.2f}" for s in result["seconds"][mode])
                for mode in ("in_place", "write_behind")
            ),
            "",
            f"write-behind / in place (median documents/s): {result['write_behind_over_in_place_median']:.3f}x; "
            f"the store's share (encode and write one entry on the scoring thread): "
            f"{result['store_share_ms_per_document']:.2f} ms per document, of about "
            f"{result['compute_ms_per_document_best_in_place']:.0f} ms of compute.",
            "Each run ends with the writer flushed (precache waits for it), so both columns count every write.",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--documents", type=int, default=32, help="pages ingested per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each mode, alternating")
    parser.add_argument("--page-size", type=int, default=448, help="pixels per side of the test pages")
    parser.add_argument("--storage", default="bfloat16", choices=["float32", "bfloat16", "float16", "int8"])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--out", default=None, help="also write the result as JSON here (and .txt beside it)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = run_ingest_bench(args.documents, args.repeats, args.page_size, args.storage)
    report(result, render(result), args.out)


if __name__ == "__main__":
    main()
