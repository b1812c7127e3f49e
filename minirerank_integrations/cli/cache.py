"""``minirerank cache stats|verify|clear --cache-dir DIR``: inspect or maintain a prefix store directory."""

from __future__ import annotations

import argparse
import os
import sqlite3

from ..errors import MiniRerankError
from ..store import DiskPrefixStore
from ..store.disk import MARKER_FILE, is_prefix_store
from ._common import EXIT_DROPPED, EXIT_OK, EXIT_USAGE, Subparsers, fail


def add_commands(commands: Subparsers) -> None:
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


def _open_store(directory: str, *, read_only: bool = False) -> DiskPrefixStore | None:
    """The store at ``directory``, or None (reported on stderr) if there is no usable prefix store there.

    A directory without the prefix store's mark is refused before anything opens it: it may hold another
    application's cache, whose rows ``verify`` and ``clear`` would delete.
    """
    if not os.path.isfile(os.path.join(directory, "cache.db")):
        fail(f"no prefix cache in {directory!r} (no cache.db)")
        return None
    if not is_prefix_store(directory):
        fail(f"{directory!r} is not a minirerank prefix store (no {MARKER_FILE}); refusing to touch it")
        return None
    try:
        store = DiskPrefixStore(directory, read_only=read_only)
    except MiniRerankError as error:
        fail(error)
        return None
    if not store.available:
        fail(
            f"the prefix cache in {directory!r} cannot be opened (damaged or unreadable cache.db); delete the "
            "directory to rebuild it, its entries are recomputed on demand"
        )
        return None
    return store


def _cache_stats(args: argparse.Namespace) -> int:
    store = _open_store(args.cache_dir, read_only=True)  # stats never writes
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
    except (OSError, sqlite3.Error, MiniRerankError) as error:
        return fail(f"verifying {args.cache_dir!r} failed: {error}")
    print(f"ok: {ok}")
    print(f"dropped: {dropped}")
    return EXIT_DROPPED if dropped else EXIT_OK


def _cache_clear(args: argparse.Namespace) -> int:
    store = _open_store(args.cache_dir)
    if store is None:
        return EXIT_USAGE
    try:
        with store:
            removed = store.clear()
    except (OSError, sqlite3.Error, MiniRerankError) as error:
        return fail(f"clearing {args.cache_dir!r} failed: {error}")
    print(f"removed: {removed}")
    return EXIT_OK
