"""``BytesOnlyDisk``: the ``diskcache.Disk`` of a prefix store, which moves bytes and never unpickles, and the
reusable host buffers value files are read into."""

from __future__ import annotations

import io
import logging
import os
import sqlite3
import stat
import threading
from typing import Any

import diskcache
import torch
from diskcache.core import MODE_BINARY, MODE_RAW, UNKNOWN

from ..errors import CacheError
from .buffers import HostBuffers
from .disk_layout import is_value_file_name

__all__ = ["READ_BUFFER_BYTES", "BytesOnlyDisk", "RefusedValue", "VanishedValue"]

logger = logging.getLogger(__name__)

READ_BUFFER_BYTES = 256 * 2**20  # host read buffers a store keeps warm for reuse (see .buffers.HostBuffers)


class RefusedValue(CacheError):
    """A row the store will not serve: not bytes, not a value file diskcache made, or a pickle."""


class VanishedValue(RefusedValue):
    """The value file a row named is gone: damage, unless a concurrent writer replaced or evicted the row."""


def _read_at(descriptor: int, view: memoryview, offset: int) -> int:
    """Bytes of the file read into ``view`` from ``offset`` in one call: ``os.preadv`` where the platform has it
    (Linux, the BSDs), else a seek and a read (Windows, older macOS)."""
    if hasattr(os, "preadv"):
        return os.preadv(descriptor, [view], offset)
    os.lseek(descriptor, offset, os.SEEK_SET)
    with open(descriptor, "rb", buffering=0, closefd=False) as reader:
        return reader.readinto(view) or 0


class BytesOnlyDisk(diskcache.Disk):
    """A ``diskcache.Disk`` that moves bytes values under str keys, and nothing else.

    The stock Disk pickles every value that is not bytes, str, int or float when storing, and unpickles
    rows whose mode is ``MODE_PICKLE`` (and keys whose ``raw`` is 0, when iterating) when reading. A
    cache directory is data that any process able to write it can change, and unpickling a planted row
    runs whatever code it names. So this Disk stores only bytes (small ones in the row, ``MODE_RAW``,
    the rest in value files, ``MODE_BINARY``) and its ``fetch`` refuses every other row with
    :class:`CacheError` instead of decoding it: text, pickles, unknown modes, non-bytes ``MODE_RAW``
    values, and file names diskcache would not have made (``../`` or absolute paths).
    """

    #: Bytes; a value file larger than this is damage (a store sets its size_limit: no entry it keeps is larger).
    max_value_bytes: int = 2**40
    #: Read value files into page-locked memory (a store serving a CUDA device sets it): torch's caching host
    #: allocator hands back warm blocks (no page faults per read) and the copy to the GPU runs asynchronously.
    pinned: bool = False

    def __init__(self, directory: str, min_file_size: int = 2**15, pickle_protocol: int = 0, **_: Any) -> None:
        # Extra ``disk_*`` settings read from the database are ignored rather than failing the open.
        super().__init__(directory, min_file_size=min_file_size, pickle_protocol=pickle_protocol)
        self._buffers = HostBuffers(READ_BUFFER_BYTES)
        self._local = threading.local()  # value files this thread stored since the last take_stored()

    def put(self, key: Any) -> tuple[str, bool]:
        if type(key) is not str:
            raise TypeError(f"prefix store keys are str digests, got {type(key).__name__}")
        return key, True

    def get(self, key: Any, raw: bool) -> str:
        if not raw or type(key) is not str:
            raise RefusedValue("row key is not a text key (pickled keys are never loaded)")
        return key

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> tuple[int, int, str | None, Any]:
        if type(value) is not bytes or read:
            raise TypeError(f"the prefix store keeps bytes from the codec only, got {type(value).__name__}")
        if len(value) < self.min_file_size:
            return 0, MODE_RAW, None, sqlite3.Binary(value)
        filename, full_path = self.filename(key, value)
        try:
            self._write(full_path, io.BytesIO(value), "xb")
        except BaseException:
            self.remove(filename)  # a partial file (full disk) would otherwise stay behind, unreferenced
            raise
        self._stored().append(filename)
        return len(value), MODE_BINARY, filename, None

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> bytes | memoryview:
        if read:
            raise RefusedValue("file handles are not served; values are read whole")
        if mode == MODE_RAW:
            if not isinstance(value, (bytes, memoryview)):
                raise RefusedValue(f"row holds a {type(value).__name__}, not bytes")
            return bytes(value)
        if mode == MODE_BINARY:
            return self._read_value_file(filename)
        raise RefusedValue(f"row has mode {mode!r}; only raw bytes and value files are read, never pickles")

    def remove(self, file_path: str | None) -> None:
        if file_path is None:
            return
        if not self.is_value_file(file_path):
            logger.warning("not removing %r: not a value file name of %s", file_path, self._directory)
            return
        super().remove(file_path)

    def is_value_file(self, filename: object) -> bool:
        """Whether ``filename`` is a name diskcache gives value files, relative to the cache directory."""
        return is_value_file_name(filename)

    def take_stored(self) -> list[str]:
        """The value files this thread stored since the last call (removed when their row did not commit)."""
        stored = self._stored()
        taken = list(stored)
        stored.clear()
        return taken

    def _stored(self) -> list[str]:
        stored = getattr(self._local, "stored", None)
        if stored is None:
            stored = self._local.stored = []
        return stored

    def _read_value_file(self, filename: str | None) -> memoryview:
        """The whole value file, read once into one buffer that the codec then decodes in place.

        Copied, not mapped: diskcache creates value files exclusively (``'xb'``) and only ever unlinks them, but
        anything else that can write the directory could change or truncate one in place, and an entry whose
        tensors view a mapping would then change after its checksum was checked, or raise SIGBUS when read.
        """
        if not self.is_value_file(filename):
            raise RefusedValue(f"row names value file {filename!r}, not one this cache would have written")
        assert filename is not None
        path = os.path.join(self._directory, filename)
        # O_NOFOLLOW and O_NONBLOCK: a planted symlink (to /dev/zero, say) or FIFO must not hang the read.
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            descriptor = os.open(path, flags)
        except FileNotFoundError as error:
            raise VanishedValue(f"value file {filename} is missing: {error}") from error
        except OSError as error:
            raise RefusedValue(f"value file {filename} cannot be opened: {error}") from error
        try:
            info = os.fstat(descriptor)
            if not stat.S_ISREG(info.st_mode):
                raise RefusedValue(f"value file {filename} is not a regular file")
            size = info.st_size
            if size > self.max_value_bytes:
                raise RefusedValue(f"value file {filename} is {size} bytes, over {self.max_value_bytes}")
            # One byte more than the file: a whole file reads short by exactly that byte, in one call, and a file
            # that grew fills it (value files are written once under a fresh name: one that grows is not ours).
            buffer = self._buffer(size + 1)
            filled = 0
            while filled < size:
                count = _read_at(descriptor, buffer[filled:], filled)
                if not count:
                    raise RefusedValue(f"value file {filename} shrank while read: {filled} of {size} bytes")
                filled += count
            if filled > size:
                raise RefusedValue(f"value file {filename} grew while read, past {size} bytes")
        except OSError as error:
            raise RefusedValue(f"value file {filename} cannot be read: {error}") from error
        finally:
            os.close(descriptor)
        return buffer[:size]

    def _buffer(self, size: int) -> memoryview:
        """``size`` writable bytes that a value file is read into and its entry's tensors then view."""
        if self.pinned:
            return torch.empty(size, dtype=torch.uint8, pin_memory=True).numpy().data  # a view keeping the tensor
        return self._buffers.take(size)
