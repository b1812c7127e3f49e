"""Load benchmark of ``minirerank serve``: a bounded async client (:mod:`..serve.loadgen`, in a process of its
own) drives 1, 4 and 16 concurrent users against a real uvicorn server on 127.0.0.1, each request one text query
over 8-20 page screenshots, with the pages' prefixes in the store (warm) or new pages (cold), with batching
across requests on and off; the in-process engine scores the same requests as the reference, in the same run.

Reports requests/s, pairs/s, p50/p95/p99 latency and the mean batch the server's ``/metrics`` saw. Usage::

    python -m minirerank_integrations.bench.serve_load --model demo --out docs/bench/serve-demo-cpu
    python -m minirerank_integrations.bench.serve_load --model qwen3-vl-2b --dtype bfloat16 --temperatures warm \\
        --threads 2 --users 4 8 --requests 16 --repeats 3 --pool 16 --docs 2 3 --image-size 256 --out docs/bench/serve-2b-cpu
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import torch

from ..engine.inputs import Candidate
from ..engine.reranker import MiniReranker, RerankRequest
from ..serve import BackgroundServer, ServeSettings, create_app
from .workload import QUERIES, page


def build_engine(model: str, device: str, dtype: str) -> tuple[MiniReranker, str]:
    """The demo model, or a random-weight model of a published shape under the ``paper`` preset."""
    if model == "demo":
        return MiniReranker.from_pretrained(device=device, dtype=dtype), "minirerank-demo"
    from ..tiny_checkpoint import build_image_processor
    from .shapes import random_backbone
    from .workload import workload_tokenizer

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    backbone = random_backbone(model, workload_tokenizer(), build_image_processor(), device=device, dtype=torch_dtype)
    return MiniReranker(backbone, "paper"), f"random-{model}"


class Pages:
    """PNG bytes of benchmark pages, drawn once per index."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._png: dict[int, bytes] = {}

    def png(self, index: int) -> bytes:
        if index not in self._png:
            buffer = io.BytesIO()
            page(index, self.size).save(buffer, format="PNG")
            self._png[index] = buffer.getvalue()
        return self._png[index]

    def uri(self, index: int) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png(index)).decode()


def make_requests(rng: random.Random, count: int, docs: tuple[int, int], pool: list[int] | None, fresh: list[int]):
    """``count`` requests as (query, page indices): pages drawn from ``pool`` (warm) or new from ``fresh`` (cold)."""
    requests = []
    for _ in range(count):
        k = rng.randint(*docs)
        if pool is not None:
            indices = rng.sample(pool, k)
        else:
            indices = [fresh.pop() for _ in range(k)]
        requests.append((rng.choice(QUERIES), indices))
    return requests


def _split(requests: list, users: int) -> list[list]:
    return [requests[u::users] for u in range(users)]


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " "))


def drive(url: str, model_name: str, pages: Pages, requests: list, users: int) -> dict[str, Any]:
    """Run the load client in its own process and summarize; the server's batch sizes from ``/metrics``."""
    bodies = [
        {
            "model": model_name,
            "query": query,
            "documents": [{"content": [{"type": "image_url", "image_url": {"url": pages.uri(i)}}]} for i in indices],
        }
        for query, indices in requests
    ]
    before = httpx.get(f"{url}/metrics").text
    with tempfile.TemporaryDirectory() as folder:
        plan, out = Path(folder, "plan.json"), Path(folder, "out.json")
        plan.write_text(json.dumps({"url": url, "users": _split(bodies, users)}))
        # CPU seconds of this process (the server and its engine run on its threads) and of the load client, so
        # a busy shared machine's noise is told apart from the work each request costs.
        cpu, client_cpu = time.process_time(), _children_cpu()
        subprocess.run([sys.executable, "-m", "minirerank_integrations.serve.loadgen", str(plan), str(out)], check=True)
        cpu, client_cpu = time.process_time() - cpu, _children_cpu() - client_cpu
        result = json.loads(out.read_text())
    after = httpx.get(f"{url}/metrics").text
    records = result["requests"]
    bad = [r["status"] for r in records if r["status"] != 200]
    if bad:
        raise RuntimeError(f"{len(bad)} requests failed: statuses {sorted(set(bad))}")
    latencies = sorted(r["seconds"] for r in records)
    pairs = sum(r["pairs"] for r in records)
    batches = _metric(after, "minirerank_batch_size_count") - _metric(before, "minirerank_batch_size_count")
    merged = _metric(after, "minirerank_batch_size_sum") - _metric(before, "minirerank_batch_size_sum")
    wall = result["wall_seconds"]
    return {
        "requests": len(records),
        "pairs": pairs,
        "seconds": wall,
        "requests_per_s": len(records) / wall,
        "pairs_per_s": pairs / wall,
        "p50_ms": 1000 * _quantile(latencies, 0.50),
        "p95_ms": 1000 * _quantile(latencies, 0.95),
        "p99_ms": 1000 * _quantile(latencies, 0.99),
        "mean_batch_requests": merged / batches if batches else 0.0,
        "batches": int(batches),
        "server_cpu_ms_per_request": 1000 * cpu / len(records),
        "client_cpu_ms_per_request": 1000 * client_cpu / len(records),
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _quantile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def in_process(engine: MiniReranker, pages: Pages, requests: list, group: int) -> dict[str, Any]:
    """The engine on the same requests: one ``rerank`` after another (group 1), or ``rerank_many`` of ``group``."""
    calls = [RerankRequest(query, [Candidate(images=[pages.png(i)]) for i in indices]) for query, indices in requests]

    def score_all() -> tuple[float, float]:
        started, cpu = time.perf_counter(), time.process_time()
        for start in range(0, len(calls), group):
            engine.rerank_many(calls[start : start + group])
        return time.perf_counter() - started, time.process_time() - cpu

    # On a worker thread, as the server calls the engine: on a busy CPU machine, torch's two OpenMP threads called
    # from the main thread measured 2-3 s for a warm 14-page request that took 50 ms from a worker thread (and
    # 100 ms from either with torch.set_num_threads(1)); the main thread would make the reference look 30x slower.
    with ThreadPoolExecutor(max_workers=1) as pool:
        wall, cpu = pool.submit(score_all).result()
    pairs = sum(len(c.candidates) for c in calls)
    return {
        "requests": len(calls),
        "pairs": pairs,
        "seconds": wall,
        "requests_per_s": len(calls) / wall,
        "pairs_per_s": pairs / wall,
        "cpu_ms_per_request": 1000 * cpu / len(calls),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Two servers over one engine (batching on and off) take turns on each row, ``--repeats`` times, so that a
    busy machine slows both alike; the in-process engine runs the same warm requests in the same turn."""
    engine, model_name = build_engine(args.model, args.device, args.dtype)
    pages = Pages(args.image_size)
    rng = random.Random(args.seed)
    pool = list(range(args.pool))
    fresh = list(range(10_000_000, 10_000_000 + 1_000_000))[::-1]  # never in the pool, never reused
    for index in pool:  # drawn before timing
        pages.uri(index)
    servers = {
        batching: BackgroundServer(
            create_app(
                engine,
                ServeSettings(
                    model_name=model_name,
                    batching=batching,
                    batch_wait_ms=args.batch_wait_ms,
                    batch_max_pairs=args.batch_max_pairs,
                    max_queue=4096,
                    max_documents=100,
                ),
            )
        ).start()
        for batching in (True, False)
    }
    rows: list[dict[str, Any]] = []
    reference: list[dict[str, Any]] = []
    try:
        # Warm: the pool's prefixes are in the store before any timed request.
        body = {"documents": [{"content": [{"type": "image_url", "image_url": {"url": pages.uri(i)}}]} for i in pool]}
        httpx.post(f"{servers[True].url}/v1/precache", json=body, timeout=3600).raise_for_status()
        for server in servers.values():  # warm-up: connections, allocator, first-call costs
            drive(server.url, model_name, pages, make_requests(rng, 4, tuple(args.docs), pool, fresh), 1)
        for temperature in args.temperatures:
            count = args.requests if temperature == "warm" else args.cold_requests
            repeats = args.repeats if temperature == "warm" else 1
            for users in args.users:
                for repeat in range(repeats):
                    warm = make_requests(rng, count, tuple(args.docs), pool, fresh)
                    for batching, server in servers.items():
                        requests = (
                            warm if temperature == "warm" else make_requests(rng, count, tuple(args.docs), None, fresh)
                        )
                        row = {"batching": batching, "temperature": temperature, "users": users, "repeat": repeat}
                        row |= drive(server.url, model_name, pages, requests, users)
                        rows.append(row)
                        print(json.dumps(row), flush=True)
                    if users == args.users[-1]:
                        for group in sorted({1, users}):
                            requests = (
                                warm
                                if temperature == "warm"
                                else make_requests(rng, count, tuple(args.docs), None, fresh)
                            )
                            row = {"temperature": temperature, "rerank_many_group": group, "repeat": repeat}
                            row |= in_process(engine, pages, requests, group)
                            reference.append(row)
                            print(json.dumps(row), flush=True)
        metrics_text = httpx.get(f"{servers[True].url}/metrics").text
    finally:
        for server in servers.values():
            server.stop()
    return {
        "model": model_name,
        "config": engine.config.model_dump(mode="json"),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "device": args.device,
            "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        },
        "server": rows,
        "in_process": reference,
        "metrics_batching_on": metrics_text,
    }


def _median_rows(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """One row per ``keys``: the median of each measure over the repeats."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    merged = []
    for key, group in groups.items():
        row = dict(zip(keys, key)) | {"repeats": len(group)}
        for measure, value in group[0].items():
            if measure not in keys and isinstance(value, (int, float)) and not isinstance(value, bool):
                row[measure] = statistics.median(r[measure] for r in group)
        merged.append(row)
    return merged


def summary(result: dict[str, Any]) -> str:
    """A markdown report: the server rows, the in-process reference, and the headline ratios."""
    lines = [f"# Serving load: {result['model']} on {result['machine']['device']}", ""]
    s = result["settings"]
    cold = f" ({s['cold_requests']} cold)" if "cold" in s["temperatures"] else ""
    lines.append(
        f"Each request: one text query over {s['docs'][0]}-{s['docs'][1]} page screenshots of "
        f"{s['image_size']}x{s['image_size']}; {s['requests']} requests per warm row{cold}, split "
        f"over the users; batch wait {s['batch_wait_ms']} ms. Warm: pages from a pool of {s['pool']} whose prefixes "
        f"are stored; cold: new pages. Medians of {s['repeats']} turns (warm; cold: one), the servers with batching "
        f"on and off taking turns; {result['machine'].get('torch_threads', '?')} torch thread(s) in the server "
        f"process. Machine load average at the end: {result['machine']['load_average']}."
    )
    lines += [
        "",
        "| batching | pages | users | req/s | pairs/s | p50 ms | p95 ms | p99 ms | mean batch (requests) "
        "| server CPU ms/request | client CPU ms/request |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    server = _median_rows(result["server"], ("batching", "temperature", "users"))
    reference = _median_rows(result["in_process"], ("temperature", "rerank_many_group"))
    for r in server:
        lines.append(
            f"| {'on' if r['batching'] else 'off'} | {r['temperature']} | {r['users']} | {r['requests_per_s']:.2f} | "
            f"{r['pairs_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f} | "
            f"{r['mean_batch_requests']:.2f} | {r.get('server_cpu_ms_per_request', float('nan')):.1f} | "
            f"{r.get('client_cpu_ms_per_request', float('nan')):.1f} |"
        )
    lines += [
        "",
        "In-process engine on the same kind of requests (no HTTP; called from a worker thread, as the server calls it):",
        "",
        "| pages | calls | req/s | pairs/s | CPU ms/request |",
        "|---|---|---|---|---|",
    ]
    for r in reference:
        call = "rerank, one by one" if r["rerank_many_group"] == 1 else f"rerank_many of {r['rerank_many_group']}"
        lines.append(
            f"| {r['temperature']} | {call} | {r['requests_per_s']:.2f} | {r['pairs_per_s']:.1f} | "
            f"{r.get('cpu_ms_per_request', float('nan')):.1f} |"
        )
    lines += ["", "Ratios measured in this run:", ""]
    by = {(r["batching"], r["temperature"], r["users"]): r for r in server}
    top = max(r["users"] for r in server)
    for temperature in s["temperatures"]:
        on, off = by.get((True, temperature, top)), by.get((False, temperature, top))
        if on and off:
            lines.append(
                f"- {temperature}, {top} users: batching on / off = {on['requests_per_s'] / off['requests_per_s']:.2f}x "
                f"requests/s (p99 {on['p99_ms']:.0f} ms on, {off['p99_ms']:.0f} ms off)"
            )
            turns = {
                (r["batching"], r["repeat"]): r["requests_per_s"]
                for r in result["server"]
                if r["temperature"] == temperature and r["users"] == top
            }
            paired = [turns[True, k] / turns[False, k] for on_, k in turns if on_ and (False, k) in turns]
            paired.sort()
            if len(paired) > 1:  # each turn's on and off ran back to back, under the same load from others
                lines.append(
                    f"- {temperature}, {top} users: batching on / off turn by turn = "
                    f"{', '.join(f'{x:.2f}x' for x in paired)} (median {statistics.median(paired):.2f}x)"
                )
            if "server_cpu_ms_per_request" in on and "server_cpu_ms_per_request" in off:
                cost = {
                    k: r["server_cpu_ms_per_request"] + r["client_cpu_ms_per_request"]
                    for k, r in (("on", on), ("off", off))
                }
                busy = {k: r["requests_per_s"] * cost[k] / 1000 for k, r in (("on", on), ("off", off))}
                lines.append(
                    f"- {temperature}, {top} users: CPU per request (server and load client) {cost['off']:.1f} ms off, "
                    f"{cost['on']:.1f} ms on: off / on = {cost['off'] / cost['on']:.2f}x, the throughput ratio were "
                    f"both to keep the same cores busy; they kept {busy['off']:.2f} cores busy off, {busy['on']:.2f} on "
                    f"(of {result['machine']['cpus']})"
                )
        ref = [r for r in reference if r["temperature"] == temperature]
        if on and ref:
            best = max(ref, key=lambda r: r["pairs_per_s"])
            one = next(r for r in ref if r["rerank_many_group"] == 1)
            lines.append(
                f"- {temperature}, {top} users: server pairs/s / in-process rerank one by one = "
                f"{on['pairs_per_s'] / one['pairs_per_s']:.2f}; / in-process best ({best['rerank_many_group']} per "
                f"call) = {on['pairs_per_s'] / best['pairs_per_s']:.2f}"
            )
            many = next((r for r in ref if r["rerank_many_group"] == top), one)
            if off and "cpu_ms_per_request" in one and "server_cpu_ms_per_request" in off:
                lines.append(
                    f"- {temperature}: the engine alone (in-process, one by one) takes {one['cpu_ms_per_request']:.1f} "
                    f"CPU ms a request, {one['cpu_ms_per_request'] / off['server_cpu_ms_per_request']:.0%} of the "
                    f"server's {off['server_cpu_ms_per_request']:.1f} with batching off; merged "
                    f"{many['rerank_many_group']} per call it takes {many['cpu_ms_per_request']:.1f}, "
                    f"{many['cpu_ms_per_request'] / on['server_cpu_ms_per_request']:.0%} of the server's "
                    f"{on['server_cpu_ms_per_request']:.1f} with batching on"
                )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo", help="demo, or a shape of bench.shapes (qwen3-vl-2b, small)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--users", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=48, help="requests per warm row, split over the users")
    parser.add_argument("--cold-requests", type=int, default=16, help="requests per cold row")
    parser.add_argument("--repeats", type=int, default=3, help="turns per warm row (medians are reported)")
    parser.add_argument("--docs", type=int, nargs=2, default=[8, 20], metavar=("MIN", "MAX"))
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--pool", type=int, default=48, help="pages whose prefixes are stored (warm)")
    parser.add_argument("--temperatures", nargs="+", default=["warm", "cold"], choices=["warm", "cold"])
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--batch-max-pairs", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads in the server process (default 1: on a 2-core machine the scorer keeps one "
        "core and HTTP, input preparation and the load client the other; a second torch thread there waits on "
        "cores those hold)",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        result = run(args)
    finally:
        torch.set_num_threads(threads)  # main() may run inside another program (a test): leave its setting
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve_load.json").write_text(json.dumps(result, indent=1))
    (args.out / "metrics.txt").write_text(result["metrics_batching_on"])
    (args.out / "results.md").write_text(summary(result))
    print(summary(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
