"""The ``minirerank`` command line: ``minirerank cache stats|verify|clear --cache-dir DIR``.

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
    _add_cache_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (``sys.argv[1:]`` when None) and return the exit status."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


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
