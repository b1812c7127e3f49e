"""Capacity of a shared prefix store: bytes per document, documents per GB of Redis, ingestion documents/s.

1. Bytes: real encoded entries (the codec's bytes, header and int8 scales included) of the shape a
   Qwen3-VL-Reranker-2B prefix has under the `paper` preset (band layers x 8 KV heads x kept tokens x 128),
   for several page sizes and each storage precision. Random values; the size does not depend on them.
2. Redis: the memory a real redis-server (started here on loopback) uses per stored entry, measured with
   MEMORY USAGE over a few entries, and from it documents per GiB of maxmemory.
3. Ingestion: documents/s of `precache` into that Redis, in one process and on a local Ray cluster with
   1 and 2 workers, on a model loaded here (default: the embedded demo model; a real checkpoint with --model).

    python -m minirerank_integrations.bench.capacity [--model PATH] [--documents 64] [--json docs/results/capacity.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image, ImageDraw

from ..demo_model import DEMO_MODEL
from ..engine.config import RerankConfig
from ..engine.inputs import Candidate
from ..engine.pruning import kept_count
from ..engine.reranker import MiniReranker
from ..scale import precache_documents, precache_on_ray
from ..store import PrefixEntry, Storage, encode_entry
from ..testing import RedisServer
from .prefix_bytes import SYSTEM_TOKENS, visual_tokens
from .shapes import SHAPES

if TYPE_CHECKING:
    from redis import Redis

PAGES = [(512, 512), (1024, 1024), (1024, 1344), (1536, 2048)]  # width x height before the resize rule
STORAGES: tuple[Storage, ...] = ("float32", "bfloat16", "int8")
TEXT_TOKENS = 64


def entry_of(layers: int, kv_heads: int, tokens: int, head_dim: int) -> PrefixEntry:
    keys = torch.randn(layers, kv_heads, tokens, head_dim, dtype=torch.bfloat16)  # the model's own dtype
    return PrefixEntry(keys=keys, values=torch.randn_like(keys), length=tokens, next_position=tokens)


def bytes_table() -> list[dict]:
    shape = SHAPES["qwen3-vl-2b"]
    paper = RerankConfig.preset("paper", shape.layers)
    assert paper.band is not None, "the paper preset has a band"
    layers = paper.band[1] - paper.band[0]
    rows = []
    for width, height in PAGES:
        w, h, visual = visual_tokens(width, height)
        tokens = SYSTEM_TOKENS + kept_count(visual, paper.keep_ratio) + TEXT_TOKENS
        entry = entry_of(layers, shape.kv_heads, tokens, shape.head_dim)
        for storage in STORAGES:
            size = len(encode_entry(entry, key="k", storage=storage))
            rows.append({"page": f"{width}x{height}", "resized": f"{w}x{h}", "visual_tokens": visual,
                         "kept_tokens": tokens, "band_layers": layers, "storage": storage, "bytes": size})  # fmt: skip
    return rows


def redis_overhead(server: RedisServer, blob: bytes, count: int = 8) -> float:
    """Bytes of server memory per stored entry of ``len(blob)`` bytes (MEMORY USAGE: value, key, allocator)."""
    client = server.client()
    client.flushall()
    names = [f"capacity:prefix:{i:064x}" for i in range(count)]
    for name in names:
        client.set(name, blob)
    used = sum(_memory_usage(client, name) for name in names) / count
    client.flushall()
    return used


def _memory_usage(client: Redis, name: str) -> int:
    """MEMORY USAGE of ``name``, bytes (the key was just written: the server answers None only if it is gone)."""
    used = client.memory_usage(name, samples=0)
    if used is None:
        raise RuntimeError(f"redis holds no {name!r}: was it evicted (maxmemory) while measuring?")
    return int(used)


def pages(folder: Path, n: int, size: int) -> list[Candidate]:
    docs = []
    for i in range(n):
        page = Image.new("RGB", (size, size), "white")
        draw = ImageDraw.Draw(page)
        draw.rectangle([8 + i % 7 * 9, 12, size // 2, size // 3], fill=(40 * (i % 6), 90, 200 - 20 * (i % 5)))
        draw.text((10, size - 40), f"page {i}: quarterly figures", fill="black")
        path = folder / f"page{i:03d}.png"
        page.save(path)
        docs.append(Candidate(images=[str(path)], text=f"page {i}", id=path.name))
    return docs


def ingestion(server: RedisServer, model: str, n: int, size: int, folder: Path) -> list[dict]:
    import ray

    docs = pages(folder, n, size)
    rows = []
    # One thread, as each Ray actor gets (one CPU, OMP_NUM_THREADS=1): on a busy 2-core machine two torch
    # threads made the same run about 5x slower (measured: 0.6 vs 3.4 documents/s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    engine = MiniReranker.from_pretrained(model, cache_url=server.url, cache_namespace="local", cache_memory_limit=0)
    loaded = time.perf_counter() - start
    report = precache_documents(engine, docs, progress=False)
    torch.set_num_threads(threads)
    rows.append({"mode": "one process", "workers": 1, "documents": report.documents, "seconds": report.seconds,
                 "load_seconds": loaded, "documents_per_s": report.documents_per_second,
                 "bytes_stored": report.bytes_stored})  # fmt: skip
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        for workers in (1, 2):
            report = precache_on_ray(docs, cache_url=server.url, cache_namespace=f"ray{workers}", model=model,
                                     workers=workers, batch_size=8, progress=False)  # fmt: skip
            assert not report.failures, report.summary()
            rows.append({"mode": "ray", "workers": workers, "documents": report.documents, "seconds": report.seconds,
                         "documents_per_s": report.documents_per_second,
                         "documents_per_s_per_worker": report.documents_per_second / workers,
                         "bytes_stored": report.bytes_stored})  # fmt: skip
    finally:
        ray.shutdown()
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEMO_MODEL)
    parser.add_argument("--documents", type=int, default=64)
    parser.add_argument("--page-size", type=int, default=448, help="pixels per side of the ingested test pages")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    table = bytes_table()
    print(f"{'page':>10} {'resized':>10} {'kept tokens':>11} {'storage':>9} {'bytes':>12} {'docs per GiB':>12}")
    work = Path(tempfile.mkdtemp())
    server = RedisServer(work / "redis").start()
    try:
        reference = next(r for r in table if r["page"] == "1024x1024" and r["storage"] == "bfloat16")
        shape = SHAPES["qwen3-vl-2b"]
        entry = entry_of(reference["band_layers"], shape.kv_heads, reference["kept_tokens"], shape.head_dim)
        blob = encode_entry(entry, key="k", storage="bfloat16")
        per_entry = redis_overhead(server, blob)
        overhead = per_entry / len(blob)
        for row in table:
            row["redis_bytes"] = row["bytes"] * overhead
            row["documents_per_gib"] = int(2**30 // row["redis_bytes"])
            print(f"{row['page']:>10} {row['resized']:>10} {row['kept_tokens']:>11} {row['storage']:>9} "
                  f"{row['bytes']:>12,} {row['documents_per_gib']:>12,}")  # fmt: skip
        print(f"redis-server memory per entry: {overhead:.4f} x the blob ({per_entry:,.0f} bytes for {len(blob):,})")
        rates = ingestion(server, args.model, args.documents, args.page_size, work)
        for row in rates:
            print(json.dumps(row))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        result = {"bytes": table, "redis_memory_per_blob_byte": overhead, "ingestion": rates,
                  "model": str(args.model), "page_size": args.page_size}  # fmt: skip
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
