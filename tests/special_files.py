"""Every kind of non-regular file this platform can make, named like images, and a guard against hangs.

Readers must refuse them by type without opening them for reading: a FIFO blocks its reader until a
writer comes, and ``/dev/zero`` or ``/dev/urandom`` never end.
"""

from __future__ import annotations

import os
import socket
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

# What a reader's message names for each kind, as the engine words it.
FIFO, DIRECTORY, SOCKET, CHARACTER, BLOCK = "FIFO", "directory", "socket", "character device", "block device"


def make_special_files(folder: Path) -> dict[str, tuple[str, str]]:
    """``{case: (source, kind)}``: a FIFO, a directory, a UNIX socket, character devices and a symbolic link
    to one, a ``file://`` URI of one, and a block device where one can be made or found, each named like
    an image. ``folder`` should have a short path (a socket's path is limited to about 100 bytes)."""
    fifo = folder / "page.png"
    os.mkfifo(fifo)
    directory = folder / "folder.png"
    directory.mkdir()
    sock_path = folder / "socket.png"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))  # the socket file stays after the socket closes
    link = folder / "zero.png"
    link.symlink_to("/dev/zero")
    cases = {
        "fifo": (str(fifo), FIFO),
        "directory": (str(directory), DIRECTORY),
        "unix socket": (str(sock_path), SOCKET),
        "/dev/zero": ("/dev/zero", CHARACTER),
        "/dev/urandom": ("/dev/urandom", CHARACTER),
        "symlink to /dev/zero": (str(link), CHARACTER),
        "file:///dev/zero": ("file:///dev/zero", CHARACTER),
        "file URI of a FIFO": (fifo.as_uri(), FIFO),
    }
    block = _block_device(folder / "disk.png")
    if block is not None:
        cases["block device"] = (block, BLOCK)
    return cases


def _block_device(path: Path) -> str | None:
    """A block device node: made with mknod (needs privileges), else the first one under /dev, else None."""
    try:
        os.mknod(path, 0o600 | stat.S_IFBLK, os.makedev(7, 0))
        return str(path)
    except (OSError, AttributeError):
        pass
    for entry in sorted(Path("/dev").iterdir()) if Path("/dev").is_dir() else []:
        try:
            if stat.S_ISBLK(entry.stat().st_mode):
                return str(entry)
        except OSError:
            continue
    return None


def returns_within(seconds: float, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)``, failing the test if it has not returned after ``seconds`` (a reader
    blocked on a FIFO never would); its exception is re-raised here."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = function(*args, **kwargs)
        except BaseException as error:  # handed to the test's thread
            outcome["error"] = error

    worker = threading.Thread(target=run, daemon=True)  # a blocked worker must not keep pytest alive
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"{getattr(function, '__name__', function)} still running after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
