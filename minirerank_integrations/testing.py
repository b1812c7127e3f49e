"""Helpers for test suites of the engine, its adapters and applications built on them.

``RedisServer`` runs a real ``redis-server`` (loopback only, a free port, a temporary directory, no
persistence), so tests of a shared store exercise the server users run rather than a fake. ``write_pdf``
writes a small multi-page PDF of given pictures, for tests of PDF loaders and page rendering; ``write_video`` a
small video of given frames (``moving_shape_frames``), for tests of video inputs.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw

if TYPE_CHECKING:
    import redis


def free_port() -> int:
    """A TCP port free on 127.0.0.1 at the time of the call."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """Start, kill and restart one server on a fixed port (so clients reconnect to the same URL).

    Needs the ``redis-server`` binary on ``PATH`` and the ``redis`` extra (redis-py). Use it as a context
    manager (started on entry, stopped on exit) or call ``start``/``stop``.
    """

    def __init__(self, directory: Path, *, password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed; `make test` installs it (apt-get install redis-server)"
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.password = password
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``redis://`` URL of this server, database 0 (with the password when one is set)."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """A redis-py client of this server (5 s socket timeout)."""
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=5)

    def start(self) -> RedisServer:
        """Start the server and wait (at most 15 s) until it answers PING."""
        import redis

        self.directory.mkdir(parents=True, exist_ok=True)
        args = [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.directory)]
        args += ["--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"]
        if self.password:
            args += ["--requirepass", self.password]
        log = open(self.directory / "redis.log", "ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while True:
            try:
                if self.client().ping():
                    return self
            except redis.exceptions.ConnectionError:
                pass
            assert self.process.poll() is None, (self.directory / "redis.log").read_text()
            assert time.monotonic() < deadline, "redis-server did not answer within 15 s"
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: what a crash or an out-of-memory kill looks like to clients."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 10 s."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None


def write_pdf(path: Path, pages: Sequence[Image.Image]) -> Path:
    """Write ``pages`` as a PDF at 72 dpi (one point per pixel, so a page renders back at its own size)."""
    first, *rest = [page.convert("RGB") for page in pages]
    first.save(path, "PDF", resolution=72, save_all=True, append_images=rest)
    return path


def shape_pages(
    colours: Sequence[str], shape: str = "rectangle", size: tuple[int, int] = (128, 160)
) -> list[Image.Image]:
    """One white page per colour, each holding one filled ``shape`` ("rectangle" or "ellipse") of that colour:
    pages a test tells apart by colour (write them with :func:`write_pdf`)."""
    pages = []
    for colour in colours:
        page = Image.new("RGB", size, "white")
        getattr(ImageDraw.Draw(page), shape)([20, 30, 100, 110], fill=colour)
        pages.append(page)
    return pages


def moving_shape_frames(
    colour: str, count: int = 4, size: tuple[int, int] = (32, 32), step: int = 4
) -> list[Image.Image]:
    """``count`` frames of a filled ``colour`` circle moving right by ``step`` pixels a frame on white: a video a
    test tells apart by colour (write it with :func:`write_video`)."""
    width, height = size
    frames = []
    for index in range(count):
        frame = Image.new("RGB", size, "white")
        left = (index * step) % max(1, width // 2)
        ImageDraw.Draw(frame).ellipse([left, height // 4, left + width // 2, height // 4 + height // 2], fill=colour)
        frames.append(frame)
    return frames


def write_video(path: Path, frames: Sequence[Image.Image], fps: int = 2) -> Path:
    """Write ``frames`` (even sides) as an MPEG-4 video at ``fps`` frames per second with PyAV (the ``video``
    extra); a few 32x32 frames take milliseconds and a couple of kilobytes."""
    import av  # the video extra; imported here so that the other helpers need none of it

    width, height = frames[0].size
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_image(frame.convert("RGB"))))
        container.mux(stream.encode(None))  # flush the encoder
    return path
