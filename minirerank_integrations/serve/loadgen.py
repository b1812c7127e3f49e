"""A bounded async load client: N users, each sending its own list of rerank requests one after another, as many
users at once as there are lists. Imports httpx only, so a benchmark runs it in a process of its own (``python -m
minirerank_integrations.serve.loadgen PLAN.json OUT.json``) where it does not share an interpreter with the server.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import httpx


async def run_load(url: str, users: list[list[dict[str, Any]]], *, path: str = "/v1/rerank") -> dict[str, Any]:
    """Send every user's requests in order, users concurrently; per request its latency (s), status and pairs."""
    records: list[dict[str, Any]] = []
    limits = httpx.Limits(max_connections=len(users) + 4, max_keepalive_connections=len(users) + 4)

    # Each body is encoded once, before the clock starts: the client's JSON work is not the server's.
    encoded = [[(json.dumps(body).encode(), len(body["documents"])) for body in bodies] for bodies in users]
    headers = {"content-type": "application/json"}

    async def user(client: httpx.AsyncClient, number: int, bodies: list[tuple[bytes, int]]) -> None:
        for content, pairs in bodies:
            started = time.perf_counter()
            response = await client.post(path, content=content, headers=headers)
            records.append(
                {
                    "user": number,
                    "seconds": time.perf_counter() - started,
                    "status": response.status_code,
                    "pairs": pairs,
                }
            )

    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        await client.get("/health")  # connection set up outside the timed part
        started = time.perf_counter()
        await asyncio.gather(*(user(client, number, bodies) for number, bodies in enumerate(encoded)))
        wall = time.perf_counter() - started
    return {"wall_seconds": wall, "requests": records}


def main(argv: list[str] | None = None) -> int:
    plan_path, out_path = (argv if argv is not None else sys.argv[1:])[:2]
    with open(plan_path, encoding="utf-8") as file:
        plan = json.load(file)
    result = asyncio.run(run_load(plan["url"], plan["users"]))
    with open(out_path, "w", encoding="utf-8") as file:
        json.dump(result, file)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
