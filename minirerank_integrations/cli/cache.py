"""``minirerank cache stats|verify|clear --cache-dir DIR``: inspect or maintain a prefix store directory."""

from __future__ import annotations

import argparse
import os
import sqlite3
from contextlib import closing
from typing import TYPE_CHECKING
from urllib.parse import quote

from ..errors import MiniRerankError
from ._common import EXIT_DROPPED, EXIT_OK, EXIT_USAGE, Subparsers, fail

if TYPE_CHECKING:
    from ..store.disk import DiskPrefixStore


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


def _refusal(directory: str) -> str | None:
    """Why ``directory`` is not touched, or None. A directory without the prefix store's mark is refused
    before anything opens it: it may hold another application's cache, whose rows ``verify`` and ``clear``
    would delete."""
    from ..store.disk import MARKER_FILE, is_prefix_store  # torch: imported when a command runs, not for --help

    if not os.path.isfile(os.path.join(directory, "cache.db")):
        return f"no prefix cache in {directory!r} (no cache.db)"
    if not is_prefix_store(directory):
        return f"{directory!r} is not a minirerank prefix store (no {MARKER_FILE}); refusing to touch it"
    return None


def _unopenable(directory: str, cause: object = None) -> str:
    because = "" if cause is None else f"{cause}: "
    return (
        f"the prefix cache in {directory!r} cannot be opened ({because}damaged or unreadable cache.db); delete the "
        "directory to rebuild it, its entries are recomputed on demand"
    )


def _open_store(directory: str) -> DiskPrefixStore | None:
    """The store at ``directory``, or None (reported on stderr) if there is no usable prefix store there."""
    from ..store.disk import DiskPrefixStore

    refusal = _refusal(directory)
    if refusal is not None:
        fail(refusal)
        return None
    try:
        store = DiskPrefixStore(directory)
    except MiniRerankError as error:
        fail(error)
        return None
    if not store.available:
        fail(_unopenable(directory))
        return None
    return store


def _cache_stats(args: argparse.Namespace) -> int:
    directory = args.cache_dir
    refusal = _refusal(directory)
    if refusal is not None:
        return fail(refusal)
    try:
        entries, volume = _read_only_counts(directory)
    except (OSError, sqlite3.Error) as error:
        return fail(_unopenable(directory, error))
    print(f"directory: {os.path.abspath(directory)}")
    print(f"entries: {entries}")
    print(f"bytes: {volume} ({volume / 2**20:.1f} MiB)")
    return EXIT_OK


def _read_only_counts(directory: str) -> tuple[int, int]:
    """Rows, and bytes of database pages plus value files (as ``diskcache.Cache.volume``), of the store at
    ``directory``, read without writing anything there.

    A plain read-only connection to a WAL database creates its ``-wal`` and ``-shm`` files when they are
    absent, so it is used only while a writer holds both (rows it committed but did not yet copy into the
    database are then counted too). Otherwise the database is opened ``immutable``: no lock and no side
    file; without a ``-wal`` every committed row is in the database itself
    (https://www.sqlite.org/uri.html#uriimmutable).
    """
    database = os.path.abspath(os.path.join(directory, "cache.db"))
    live = all(os.path.exists(database + suffix) for suffix in ("-wal", "-shm"))
    try:
        return _counts(database, "mode=ro" if live else "mode=ro&immutable=1")
    except sqlite3.OperationalError:
        if not live:
            raise
        return _counts(database, "mode=ro&immutable=1")  # a -shm this process may not write


def _counts(database: str, mode: str) -> tuple[int, int]:
    with closing(sqlite3.connect(f"file:{quote(database)}?{mode}", uri=True, timeout=60)) as connection:
        ((entries,),) = connection.execute("SELECT count(*) FROM Cache").fetchall()
        ((pages,),) = connection.execute("PRAGMA page_count").fetchall()
        ((page_size,),) = connection.execute("PRAGMA page_size").fetchall()
        ((files,),) = connection.execute("SELECT COALESCE(SUM(size), 0) FROM Cache").fetchall()
    return int(entries), int(pages) * int(page_size) + int(files)


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
