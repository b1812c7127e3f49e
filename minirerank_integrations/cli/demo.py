"""``minirerank demo``: the README's main job."""

from __future__ import annotations

import argparse

from ._common import EXIT_OK, Subparsers, fail


def add_commands(commands: Subparsers) -> None:
    demo = commands.add_parser(
        "demo",
        help="pre-cache a few pictures and pages, then rerank queries by the fast path and by dense, timed",
        description="Offline, on the embedded demo model by default: pre-cache the documents (as at ingestion), "
        "then rerank each query by the fast path and by the dense baseline, with both timings and their ratio, "
        "the ranking with scores and relevance marks, and what the fast path reused.",
    )
    demo.add_argument("--model", default=None, help="a Qwen3-VL checkpoint; default: the embedded demo model")
    demo.add_argument("--query", action="append", default=None, help="a text query (repeatable)")
    demo.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo
    from ..errors import MiniRerankError

    if args.query is not None and any(not query.strip() for query in args.query):
        return fail("--query must not be empty; give the text to search for")
    try:
        run_demo(args.model, queries=args.query, write=print)
    except MiniRerankError as exc:
        return fail(exc)
    return EXIT_OK
