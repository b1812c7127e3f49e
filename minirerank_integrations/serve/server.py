"""Running the service: :class:`BackgroundServer` runs a real uvicorn server on a thread of this process (tests,
notebooks); ``minirerank serve`` runs uvicorn in the foreground, where SIGTERM stops accepting, lets the requests
in flight finish, then exits."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import httpx
import uvicorn


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class BackgroundServer:
    """A uvicorn server for ``app`` on ``host`` and a free port, on a daemon thread.

    ``start()`` returns once ``/health`` answers (any status; ``wait_ready=True`` waits for 200). Use it as a
    context manager, or call ``stop()``: uvicorn's graceful shutdown, as on SIGTERM.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int | None = None, **config: Any) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=self.port, log_level="warning", lifespan="on", **config)
        )
        self._thread = threading.Thread(target=self._server.run, name="minirerank-serve", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, *, wait_ready: bool = True, timeout: float = 120.0) -> BackgroundServer:
        """Start serving; returns once /health answers (200 when ``wait_ready``), or raises TimeoutError."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._thread.is_alive():
                raise RuntimeError(f"the server on {self.url} stopped while starting")
            try:
                status = httpx.get(f"{self.url}/health", timeout=2.0).status_code
                if status == 200 or not wait_ready:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"the server on {self.url} was not ready within {timeout} s")

    def stop(self, timeout: float = 30.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> BackgroundServer:
        return self if self._thread.is_alive() else self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
