"""``minirerank demo``: the README's main job."""

from __future__ import annotations

import argparse

from ._common import EXIT_OK, Subparsers, fail


def add_commands(commands: Subparsers) -> None:
    demo = commands.add_parser(
        "demo",
        help="rerank a few pictures and passages with the paper and dense presets",
        description="Rerank a few pictures and passages with the paper and dense presets, offline.",
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
        report = run_demo(args.model, queries=args.query)
    except MiniRerankError as exc:
        return fail(exc)
    print(report)
    return EXIT_OK
