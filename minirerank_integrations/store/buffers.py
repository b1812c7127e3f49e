"""Host buffers reused once no tensor views them: value files are read into them (:mod:`.bytes_disk`) and
windows of entries gathered into them (:mod:`.window`), so neither pays the page faults of fresh memory."""

from __future__ import annotations

import sys
import threading

__all__ = ["HostBuffers"]


class HostBuffers:
    """Host buffers that value files (or windows of entries) are read into, reused once no tensor views them.

    A fresh buffer costs a page fault per 4 KiB page (about 4500 for an 18 MB entry, which the kernel maps and
    zeroes): measured here at 3 to 5 times the read itself, while a warm buffer costs none. A buffer is free
    when this pool holds the only reference: ``torch.frombuffer`` keeps the buffer alive through the
    memoryview it was given, so while an entry's tensors (or any view of them) live, its buffer is not handed
    out again. At most ``max_bytes`` of buffers are kept; reads beyond that get fresh ones.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._buffers: list[bytearray] = []
        self._lock = threading.Lock()

    def take(self, size: int) -> memoryview:
        """``size`` writable bytes, warm when a kept buffer is free."""
        count = getattr(sys, "getrefcount", None)  # CPython; elsewhere every read gets a fresh buffer
        with self._lock:
            free_slot = None
            for slot in range(len(self._buffers)):
                # 2: this list's reference and getrefcount's argument; any more and an entry still views it.
                if count is None or count(self._buffers[slot]) != 2:
                    continue
                if len(self._buffers[slot]) >= size:
                    return memoryview(self._buffers[slot])[:size]  # taken before the lock is released
                free_slot = slot if free_slot is None else free_slot
            buffer = bytearray(size)
            kept = sum(len(kept) for kept in self._buffers)
            if free_slot is not None and kept - len(self._buffers[free_slot]) + size <= self.max_bytes:
                self._buffers[free_slot] = buffer  # a free buffer too small for this read makes room
            elif count is not None and kept + size <= self.max_bytes:
                self._buffers.append(buffer)
            return memoryview(buffer)
