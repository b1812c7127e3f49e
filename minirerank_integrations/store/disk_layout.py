"""The files of a prefix store directory: its mark, diskcache's database and value file names.

A store marks its directory (:data:`MARKER_FILE`) before ``cache.db`` exists, so a ``cache.db`` without the
mark is another application's data and is never touched. Value files are named as ``diskcache.Disk.filename``
names them; any other name in a row is refused (:mod:`.bytes_disk`) and never removed.
"""

from __future__ import annotations

import json
import os
import re
import threading

__all__ = [
    "DATABASE",
    "MARKER_FILE",
    "ORPHAN_MIN_AGE_S",
    "directory_identity",
    "hex_dirs",
    "is_prefix_store",
    "is_value_file_name",
    "write_marker",
]

# The names diskcache.Disk.filename gives value files: two levels of two hex digits, then 28 hex digits.
_VALUE_FILE = re.compile(r"[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{28}\.val")
_HEX_DIR = re.compile(r"[0-9a-f]{2}")
#: Seconds; a writer commits its row within its timeout of writing the value file, so an older file no row
#: names was left by a writer that died.
ORPHAN_MIN_AGE_S = 15 * 60
#: The file that marks a directory as a minirerank prefix store; written before ``cache.db`` is created.
MARKER_FILE = "minirerank-prefix-store.json"
_MARKER = {"kind": "minirerank-prefix-store", "version": 1}
DATABASE = "cache.db"  # diskcache's database file name


def is_prefix_store(directory: str | os.PathLike[str]) -> bool:
    """Whether ``directory`` carries the mark a :class:`DiskPrefixStore` writes when it creates a store."""
    try:
        with open(os.path.join(os.fspath(directory), MARKER_FILE), encoding="utf-8") as handle:
            marker = json.loads(handle.read(4096))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("kind") == _MARKER["kind"]


def write_marker(directory: str) -> None:
    """Mark ``directory`` (atomically: a reader sees the whole file or none)."""
    temporary = os.path.join(directory, f".{MARKER_FILE}.{os.getpid()}.{threading.get_ident()}")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(_MARKER, handle)
    os.replace(temporary, os.path.join(directory, MARKER_FILE))


def is_value_file_name(filename: object) -> bool:
    """Whether ``filename`` is a name diskcache gives value files, relative to the cache directory."""
    return isinstance(filename, str) and _VALUE_FILE.fullmatch(filename.replace(os.sep, "/")) is not None


def directory_identity(directory: str) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of ``directory``, or None when it is gone: a store notices a replaced directory."""
    try:
        info = os.stat(directory)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def hex_dirs(path: str) -> list[os.DirEntry[str]]:
    """The two-hex-digit subdirectories of ``path`` (where diskcache puts value files), not following links."""
    with os.scandir(path) as entries:
        return [e for e in entries if _HEX_DIR.fullmatch(e.name) and e.is_dir(follow_symlinks=False)]
