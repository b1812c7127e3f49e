"""How one block is measured: wall time once the device's queued work is done, and peak memory (resident and,
on CUDA, GPU) sampled while it runs."""

from __future__ import annotations

import os
import platform
import resource
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

__all__ = ["PeakMemory", "sync", "timed"]


class PeakMemory:
    """Peak resident memory (and GPU memory on CUDA) while a block runs, sampled every 20 ms.

    GPU memory is read on ``device`` itself ("cuda:1" is not the current device unless made so)."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.device = torch.device(device)
        self.peak_rss = 0
        self.peak_gpu: int | None = None

    @staticmethod
    def rss() -> int:
        try:
            with open("/proc/self/statm", encoding="ascii") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):  # not Linux: the process's lifetime peak
            scale = 1 if platform.system() == "Darwin" else 1024
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale

    @contextmanager
    def measure(self) -> Iterator[PeakMemory]:
        stop = threading.Event()
        self.peak_rss = self.rss()

        def sample() -> None:
            while not stop.wait(0.02):
                self.peak_rss = max(self.peak_rss, self.rss())

        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()
            self.peak_rss = max(self.peak_rss, self.rss())
            if self.cuda:
                self.peak_gpu = torch.cuda.max_memory_allocated(self.device)


def sync(device: str) -> None:
    """Wait for ``device``'s queued work (the device asked for, not the current one) before reading a clock."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def timed(fn: Callable[[], object], device: str) -> tuple[float, PeakMemory]:
    """Seconds ``fn`` takes on ``device`` (its queued work included) under ``torch.no_grad``, and its peak memory."""
    memory = PeakMemory(device)
    with torch.no_grad(), memory.measure():
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        seconds = time.perf_counter() - start
    return seconds, memory
