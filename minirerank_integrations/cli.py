"""The ``minirerank`` command line: ``demo``, ``rerank`` and ``cache stats|verify|clear --cache-dir DIR``.

Each command group registers itself on the top-level subparsers through an ``_add_<group>_commands``
function and sets ``handler`` (a function from the parsed arguments to an exit status); adding ``demo``,
``rerank`` or ``eval`` is one more such function called from :func:`build_parser`.

Exit statuses: 0 success; 1 ``cache verify`` found and dropped unreadable entries (so scripts and cron
jobs notice damage; a second run then exits 0); 2 usage errors (argparse) or a cache directory that
does not hold a prefix cache or cannot be opened.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from collections.abc import Callable

from .prefix_store import DiskPrefixStore

__all__ = ["build_parser", "main"]

EXIT_OK = 0
EXIT_DROPPED = 1  # `cache verify` removed entries
EXIT_USAGE = 2  # same status argparse uses for bad arguments

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The full parser; each subcommand sets ``handler`` in its defaults."""
    parser = argparse.ArgumentParser(prog="minirerank", description="Multimodal reranking on Qwen3-VL.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_demo_commands(commands)
    _add_rerank_commands(commands)
    _add_cache_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (``sys.argv[1:]`` when None) and return the exit status."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


# -- minirerank demo / rerank ----------------------------------------------------------------------------


def _add_demo_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo",
        help="rerank a few pictures and passages with the paper and dense presets",
        description="Rerank a few pictures and passages with the paper and dense presets, offline.",
    )
    demo.add_argument("--model", default=None, help="a Qwen3-VL checkpoint; default: a tiny offline one")
    demo.add_argument("--query", action="append", default=None, help="a text query (repeatable)")
    demo.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    print(run_demo(args.model, queries=args.query))
    return EXIT_OK


def _add_rerank_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rerank = commands.add_parser(
        "rerank",
        help="rerank text and image candidates for one query; prints JSON lines, best first",
        description="Rerank candidates for one query. Each --text or --image is one candidate.",
    )
    rerank.add_argument("--model", required=True, help="a Qwen3-VL checkpoint (folder or hub id)")
    rerank.add_argument("--query", default="", help="the query text")
    rerank.add_argument("--query-image", action="append", default=[], metavar="PATH", help="a query image")
    rerank.add_argument("--text", action="append", default=[], help="a text candidate (repeatable)")
    rerank.add_argument("--image", action="append", default=[], metavar="PATH", help="an image candidate")
    rerank.add_argument("--config", default="paper", choices=["paper", "dense"], help="the preset")
    rerank.add_argument("--top-n", type=int, default=None)
    rerank.add_argument("--cache-dir", default=None, help="a persistent prefix cache directory")
    rerank.add_argument("--device", default="cpu")
    rerank.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    rerank.set_defaults(handler=_rerank)


def _rerank(args: argparse.Namespace) -> int:
    import json

    from .errors import MiniRerankError
    from .inputs import Candidate, Query
    from .reranker import MiniReranker

    candidates = [Candidate(text=t, id=f"text:{i}") for i, t in enumerate(args.text)]
    candidates += [Candidate(images=[p], id=p) for p in args.image]
    try:
        reranker = MiniReranker.from_pretrained(
            args.model, config=args.config, device=args.device, dtype=args.dtype, cache_dir=args.cache_dir
        )
        results = reranker.rerank(Query(text=args.query, images=args.query_image), candidates, top_n=args.top_n)
    except MiniRerankError as exc:
        print(f"minirerank: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for result in results:
        print(json.dumps({"index": result.index, "id": result.id, "score": result.score}))
    return EXIT_OK


# -- minirerank cache ... ------------------------------------------------------------------------------


def _add_cache_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cache = commands.add_parser(
        "cache",
        help="inspect or maintain a prefix cache directory",
        description="Inspect or maintain a prefix cache directory (see DiskPrefixStore).",
    )
    actions = cache.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    for name, handler, text in (
        ("stats", _cache_stats, "print the number of entries and the bytes held"),
        (
            "verify",
            _cache_verify,
            "decode every entry, drop unreadable ones; exits 1 if any was dropped",
        ),
        ("clear", _cache_clear, "remove every entry"),
    ):
        action = actions.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        action.add_argument("--cache-dir", required=True, metavar="DIR", help="the prefix cache directory")
        action.set_defaults(handler=handler)


def _open_store(directory: str) -> DiskPrefixStore | None:
    """The store at ``directory``, or None (reported on stderr) if there is no usable cache there."""
    if not os.path.isfile(os.path.join(directory, "cache.db")):
        print(f"minirerank: no prefix cache in {directory!r} (no cache.db)", file=sys.stderr)
        return None
    store = DiskPrefixStore(directory)
    if not store.available:
        print(f"minirerank: the prefix cache in {directory!r} cannot be opened", file=sys.stderr)
        return None
    return store


def _cache_stats(args: argparse.Namespace) -> int:
    store = _open_store(args.cache_dir)
    if store is None:
        return EXIT_USAGE
    with store:
        entries, volume = len(store), store.stats.bytes
    print(f"directory: {os.path.abspath(args.cache_dir)}")
    print(f"entries: {entries}")
    print(f"bytes: {volume} ({volume / 2**20:.1f} MiB)")
    return EXIT_OK


def _cache_verify(args: argparse.Namespace) -> int:
    store = _open_store(args.cache_dir)
    if store is None:
        return EXIT_USAGE
    try:
        with store:
            ok, dropped = store.verify()
    except (OSError, sqlite3.Error) as error:
        print(f"minirerank: verifying {args.cache_dir!r} failed: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(f"ok: {ok}")
    print(f"dropped: {dropped}")
    return EXIT_DROPPED if dropped else EXIT_OK


def _cache_clear(args: argparse.Namespace) -> int:
    store = _open_store(args.cache_dir)
    if store is None:
        return EXIT_USAGE
    with store:
        removed = store.clear()
    print(f"removed: {removed}")
    return EXIT_OK
