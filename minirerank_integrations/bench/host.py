"""The host's share of a warm pair: reading one prefix entry back, against a memcpy of its bytes.

At the 2B shape a GPU does about a millisecond of work per warm pair at 1024x1024 (``docs/design.md``, "On a GPU"),
so the host must deliver each entry at memory speed. For entries of the 2B shape (8 band layers x kept
tokens x 8 KV heads x 128 head_dim, keys and values, bfloat16) at 512x512 and 1024x1024 with keep 0.5,
stored as bfloat16 and int8, this measures in one run, on one thread unless said:

* ``memcpy``: copying the entry's stored bytes once (the floor of any read from host memory);
* ``xxh3`` and ``blake2b``: hashing them (the codec's checksum now, and before codec version 3);
* ``file``: reading the value file into one buffer (``readinto``, page cache warm); ``decode``: checking and
  decoding it (checksum, header, tensors viewing the buffer: an int8 entry stays codes and scales);
* ``disk get``: :meth:`DiskPrefixStore.get` end to end of an entry read before (its file, checksum and decode;
  the SQLite row is read on a first read only, its access time written in batches), and its ratio to
  ``memcpy`` (target: at most 3x). It includes no dequantization: an int8 entry is served as codes and
  scales and dequantized in the window gather below. ``on device``: the host's share of the same read when
  the store serves a device (``device="meta"`` stands for the GPU: file, checksum and checks, without
  the copy to the device); ``disk get_many``: a window of entries on 1 and on 4 reader threads;
* ``gather``: per entry, gathering a window of 8 entries into one bfloat16 batch buffer on the host
  (:func:`~..store.window.gather_window`, what the engine does before the band layers): a copy for bfloat16
  entries, the int8 dequantization fused into it for int8 ones; its ratio is to ``memcpy out``, a memcpy of
  the bfloat16 bytes the gather writes. ``get + gather`` is a warm entry read and batched on the host, over
  ``memcpy``. On a GPU, int8 codes and scales are gathered instead (half the bytes over the bus) and
  dequantized on the device;
* ``dequant before`` (int8): the host dequantization the codec ran inside every read before int8 entries
  were served as codes and scales (cast, then multiply in place), for comparison in the same run;
* ``memory tier get``: the same entry from the memory tier in front of the directory;
* ``put``: the scoring thread's cost of storing one entry, written in place or handed to the writer thread,
  and ``flush``: the writer's time to write it.

Token counts follow the engine: a 1024x1024 page is ``smart_resize``d to itself and gives (1024 / 32)**2 =
1024 visual tokens, of which ``kept_count`` keeps 512 at keep 0.5, plus the 46 text tokens of the benchmark
workload's document prefix (``docs/bench/qwen3-vl-2b-cpu/bench.json``: 302 prefix tokens at 512x512 with
256 visual tokens, unpruned): 558 tokens at 1024x1024, 174 at 512x512.

    python -m minirerank_integrations.bench.host [--repeats 30] [--out docs/bench/host_cpu.json]
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
import xxhash

from ..engine.images import smart_resize
from ..engine.pruning import kept_count
from ..store import DiskPrefixStore, MemoryPrefixStore, PrefixEntry, TieredPrefixStore, WriteBehindStore
from ..store.codec import decode_entry, encode_entry, row_key
from ..store.window import gather_window
from .outputs import report
from .shapes import SHAPES

#: Text tokens of the benchmark workload's document prefix around its image (system prompt, "<Document>:").
PREFIX_TEXT_TOKENS = 46
BAND_LAYERS = 8  # the paper band [8, 16) of the 28-layer 2B
KEEP_RATIO = 0.5
SIZES = (512, 1024)
STORAGES = ("bfloat16", "int8")
WINDOW = 8  # entries per get_many, as the engine's fetch window reads them (fewer: 18 MB each)


def prefix_tokens(size: int, keep_ratio: float = KEEP_RATIO) -> int:
    """Tokens a ``size`` x ``size`` page's prefix keeps: its kept visual tokens plus the prefix's text."""
    height, width = smart_resize(size, size)
    visual = (height // 32) * (width // 32)  # one token per merged 32 x 32 patch
    return kept_count(visual, keep_ratio) + PREFIX_TEXT_TOKENS


def entry_of(tokens: int, seed: int = 0) -> PrefixEntry:
    """A random bfloat16 entry of the 2B shape: [band_layers, kv_heads, tokens, head_dim] keys and values."""
    shape = SHAPES["qwen3-vl-2b"]
    generator = torch.Generator().manual_seed(seed)
    dims = (BAND_LAYERS, shape.kv_heads, tokens, shape.head_dim)
    keys = torch.randn(dims, generator=generator).to(torch.bfloat16)
    values = torch.randn(dims, generator=generator).to(torch.bfloat16)
    return PrefixEntry(keys=keys, values=values, length=tokens, next_position=tokens + 4)


def _median_s(run: Callable[[], object], repeats: int) -> float:
    run()  # warm: page cache, allocator, thread pools
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _interleaved(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each of ``runs`` per repeat, run in turn once per repeat (after one warm round)."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def measure(size: int, storage: str, directory: str, repeats: int) -> dict[str, Any]:
    """One row: every timing above for the entry of a ``size`` x ``size`` page stored as ``storage``."""
    tokens = prefix_tokens(size)
    entry = entry_of(tokens)
    key = f"{size}-{storage}"
    blob = encode_entry(entry, key=row_key(key, storage), storage=storage)  # type: ignore[arg-type]
    source = memoryview(blob)
    target = memoryview(bytearray(len(blob)))

    def memcpy() -> None:
        target[:] = source

    disk = DiskPrefixStore(os.path.join(directory, key, "one"), storage=storage, min_file_size=0)  # type: ignore[arg-type]
    disk.put(key, entry)
    (value_file,) = glob.glob(os.path.join(directory, key, "one", "*", "*", "*.val"))  # the entry's only file
    many = DiskPrefixStore(os.path.join(directory, key, "many"), storage=storage, size_limit=2**36)  # type: ignore[arg-type]
    window = [f"{key}-{i}" for i in range(WINDOW)]
    for i, name in enumerate(window):
        many.put(name, entry_of(tokens, seed=i + 1))
    tiered = TieredPrefixStore([MemoryPrefixStore(size_limit=2**31), disk])
    tiered.get(key)  # promoted into the memory tier

    def read_file() -> bytearray:
        buffer = bytearray(os.path.getsize(value_file))
        with open(value_file, "rb", buffering=0) as handle:
            handle.readinto(buffer)
        return buffer

    def get_many(readers: int) -> Callable[[], object]:
        def run() -> object:
            many.readers = readers
            return many.get_many(window)

        return run

    on_device = DiskPrefixStore(disk.directory, storage=storage, device="meta")  # type: ignore[arg-type]

    # Interleaved: each repeat runs every measurement once, so a change of load on a shared machine reaches
    # the baseline and the measured reads alike, and their ratio stays meaningful.
    paired = _interleaved(
        {
            "memcpy": memcpy,
            "xxh3": lambda: xxhash.xxh3_128(source).digest(),
            "file": read_file,
            "decode": lambda: decode_entry(blob, key=row_key(key, storage), storage=storage),  # type: ignore[arg-type]
            "disk_get": lambda: disk.get(key),
            "disk_get_host_share_on_device": lambda: on_device.get(key),
            "memory_tier_get": lambda: tiered.get(key),
        },
        repeats,
    )
    seconds = {name: statistics.median(values) for name, values in paired.items()}
    fastest = {name: min(values) for name, values in paired.items()}

    def ratio(name: str, baseline: str = "memcpy", times: dict[str, list[float]] = paired) -> float:
        """Median over repeats of ``name`` / the ``baseline`` run just before it (same load, same moment)."""
        return round(statistics.median(a / b for a, b in zip(times[name], times[baseline])), 2)

    gathered = _gather_times(many.get_many(window), max(3, repeats // 3))
    seconds.update({name: statistics.median(values) for name, values in gathered.items()})
    get_and_gather = [a + b for a, b in zip(paired["disk_get"], gathered["gather"])]

    few = max(3, repeats // 5)
    seconds["blake2b"] = _median_s(lambda: hashlib.blake2b(source, digest_size=32).digest(), few)
    seconds["disk_get_many_1_reader"] = _median_s(get_many(1), few) / WINDOW
    seconds["disk_get_many_4_readers"] = _median_s(get_many(4), few) / WINDOW
    on_device.close()
    seconds.update(_puts(os.path.join(directory, key, "puts"), storage, tokens, max(3, repeats // 5)))
    tiered.close()
    many.close()
    gb = len(blob) / 1e9
    return {
        "image_size": size,
        "prefix_tokens": tokens,
        "storage": storage,
        "stored_bytes": len(blob),
        "ms": {name: round(value * 1e3, 3) for name, value in seconds.items()},
        "gb_per_s": {name: round(gb / seconds[name], 2) for name in ("memcpy", "xxh3", "blake2b", "file")},
        "min_ms": {name: round(value * 1e3, 3) for name, value in fastest.items()},
        "disk_get_over_memcpy": ratio("disk_get"),
        "disk_get_host_share_on_device_over_memcpy": ratio("disk_get_host_share_on_device"),
        "memory_tier_get_over_memcpy": ratio("memory_tier_get"),
        "min_disk_get_over_min_memcpy": round(fastest["disk_get"] / fastest["memcpy"], 2),
        "gather_over_memcpy_out": ratio("gather", "memcpy_out", gathered),
        "get_and_gather_over_memcpy": round(
            statistics.median(a / b for a, b in zip(get_and_gather, paired["memcpy"])), 2
        ),
    }


def _gather_times(entries: list[PrefixEntry | None], repeats: int) -> dict[str, list[float]]:
    """Seconds per entry of gathering ``entries`` into one bfloat16 window buffer, of a memcpy of the bytes it
    writes, and (int8) of the host dequantization the codec ran before, interleaved."""
    window = [entry for entry in entries if entry is not None]
    out_bytes = sum(2 * 2 * math.prod(entry.shape) for entry in window)  # keys and values, bfloat16
    source, target = torch.empty(out_bytes, dtype=torch.uint8), torch.empty(out_bytes, dtype=torch.uint8)
    runs: dict[str, Callable[[], object]] = {
        "memcpy_out": lambda: target.copy_(source),
        "gather": lambda: gather_window(window, "cpu", torch.bfloat16),
    }
    if window[0].int8 is not None:

        def dequantize_before() -> None:
            for entry in window:
                stored = entry.int8
                assert stored is not None
                for codes, scales in ((stored.keys, stored.keys_scale), (stored.values, stored.values_scale)):
                    out = torch.empty(codes.shape, dtype=stored.dtype)
                    out.copy_(codes)
                    out.mul_(scales)

        runs["dequant_before"] = dequantize_before
    return {name: [t / len(window) for t in times] for name, times in _interleaved(runs, repeats).items()}


def _puts(directory: str, storage: str, tokens: int, repeats: int) -> dict[str, float]:
    """The scoring thread's time per stored entry: written in place, or queued for the writer thread."""
    entries = [entry_of(tokens, seed=100 + i) for i in range(repeats)]
    direct = DiskPrefixStore(os.path.join(directory, "direct"), storage=storage, size_limit=2**36)  # type: ignore[arg-type]
    start = time.perf_counter()
    for i, entry in enumerate(entries):
        direct.put(f"d{i}", entry)
    in_place = (time.perf_counter() - start) / repeats
    direct.close()
    behind = WriteBehindStore(DiskPrefixStore(os.path.join(directory, "behind"), storage=storage, size_limit=2**36))  # type: ignore[arg-type]
    start = time.perf_counter()
    for i, entry in enumerate(entries):
        behind.put(f"d{i}", entry)
    queued = (time.perf_counter() - start) / repeats
    behind.flush()
    drained = (time.perf_counter() - start) / repeats
    behind.close()
    return {"put_in_place": in_place, "put_write_behind": queued, "put_write_behind_until_flushed": drained}


def run_host_bench(repeats: int = 30, directory: str | None = None) -> dict[str, Any]:
    """Every row (sizes x storages) measured in one process, with the machine it ran on."""
    with tempfile.TemporaryDirectory(prefix="minirerank-host-bench-", dir=directory) as scratch:
        rows = [measure(size, storage, scratch, repeats) for size in SIZES for storage in STORAGES]
    return {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "xxhash": xxhash.VERSION,
        },
        "repeats": repeats,
        "rows": rows,
    }


def render(result: dict[str, Any]) -> str:
    """A plain-text table of ``result``."""
    lines = [
        f"host pipeline, 2B shape (band {BAND_LAYERS} layers, keep {KEEP_RATIO}), median of {result['repeats']} "
        f"reads; {result['machine']['cpus']} CPUs, load {result['machine']['load_average']}",
        "",
        f"{'size':>5} {'storage':>8} {'tokens':>6} {'MB':>6} | {'memcpy':>7} {'xxh3':>6} {'blake2b':>7} "
        f"{'file':>6} {'decode':>6} {'disk get':>8} {'x memcpy':>8} {'on dev':>6} {'x memcpy':>8} {'mem tier':>8} | "
        f"{'get_many/1':>10} {'get_many/4':>10} | {'put':>6} {'queued':>6} {'flushed':>7}",
    ]
    for row in result["rows"]:
        ms = row["ms"]
        lines.append(
            f"{row['image_size']:>5} {row['storage']:>8} {row['prefix_tokens']:>6} {row['stored_bytes'] / 1e6:>6.1f} | "
            f"{ms['memcpy']:>7.2f} {ms['xxh3']:>6.2f} {ms['blake2b']:>7.2f} {ms['file']:>6.2f} {ms['decode']:>6.2f} "
            f"{ms['disk_get']:>8.2f} {row['disk_get_over_memcpy']:>8.2f} {ms['disk_get_host_share_on_device']:>6.2f} "
            f"{row['disk_get_host_share_on_device_over_memcpy']:>8.2f} {ms['memory_tier_get']:>8.4f} | "
            f"{ms['disk_get_many_1_reader']:>10.2f} {ms['disk_get_many_4_readers']:>10.2f} | "
            f"{ms['put_in_place']:>6.2f} {ms['put_write_behind']:>6.2f} {ms['put_write_behind_until_flushed']:>7.2f}"
        )
    lines += [
        "",
        "window gather (a window of 8 entries into one bfloat16 batch buffer on the host), ms per entry:",
        f"{'size':>5} {'storage':>8} | {'memcpy out':>10} {'gather':>7} {'x memcpy out':>12} | "
        f"{'get+gather x memcpy':>19} | {'dequant before':>14}",
    ]
    for row in result["rows"]:
        ms = row["ms"]
        before = f"{ms['dequant_before']:>14.2f}" if "dequant_before" in ms else f"{'-':>14}"
        lines.append(
            f"{row['image_size']:>5} {row['storage']:>8} | {ms['memcpy_out']:>10.2f} {ms['gather']:>7.2f} "
            f"{row['gather_over_memcpy_out']:>12.2f} | {row['get_and_gather_over_memcpy']:>19.2f} | {before}"
        )
    lines += ["", "fastest of the repeats (least disturbed by other load): memcpy, disk get, ratio"]
    for row in result["rows"]:
        fast = row["min_ms"]
        lines.append(
            f"{row['image_size']:>5} {row['storage']:>8}: {fast['memcpy']:.2f} ms, {fast['disk_get']:.2f} ms, "
            f"{row['min_disk_get_over_min_memcpy']:.2f}x (host share on a device {fast['disk_get_host_share_on_device']:.2f} ms)"
        )
    lines += [
        "",
        "x memcpy: the median over repeats of each read over the memcpy (of the entry's stored bytes) run just before",
        "it. Milliseconds per entry. 'disk get' (a warm read: file, checksum, decode; the row is read on a first read",
        "only) and 'decode' include no dequantization: an int8 entry is served as",
        "codes and scales (views of the read buffer) and dequantized once, fused, in the window gather. 'on dev': the",
        "host's share when the store serves a device (the copy, and for int8 the dequantization, then run there);",
        "get_many per entry of a window of 8; put: the scoring thread's time per entry written in place, queued for",
        "the writer thread, and until the writer has flushed them all. Gather: bfloat16 entries are copied into the",
        "window buffer, int8 ones dequantized into it (float32 product rounded once, in cache-sized chunks);",
        "'get+gather x memcpy': a warm entry read and batched on the host, over the memcpy of its stored bytes;",
        "'dequant before': the host dequantization every int8 read ran before (cast, then multiply in place).",
        "GB/s: "
        + "; ".join(
            f"{r['image_size']} {r['storage']}: "
            + ", ".join(f"{name} {value:g}" for name, value in r["gb_per_s"].items())
            for r in result["rows"]
        ),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=30, help="timed reads per measurement (median taken)")
    parser.add_argument("--dir", default=None, help="directory for the scratch stores (default: the temp dir)")
    parser.add_argument("--out", default=None, help="also write the result as JSON here (and .txt beside it)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: per-thread cost)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = run_host_bench(repeats=args.repeats, directory=args.dir)
    report(result, render(result), args.out)


if __name__ == "__main__":
    main()
