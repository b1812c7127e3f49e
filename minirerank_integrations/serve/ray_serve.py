"""N replicas of the service behind Ray Serve (the ``ray`` and ``serve`` extras, plus ``ray[serve]``): each
replica loads its own engine and builds the same app as ``minirerank serve``; they share prefixes through one
Redis store (``cache_url``), so a page pre-cached through one replica is warm on every other.

``minirerank serve --ray --replicas N --cache-url redis://...`` runs :func:`run` (``RAY_ADDRESS`` selects a
cluster, else a local one starts); in Python, ``serve.run(deployment(...), route_prefix="/")``.
"""

from __future__ import annotations

from typing import Any

from .settings import ServeSettings

#: The Ray Serve application name.
APP_NAME = "minirerank"


def deployment(
    engine_options: dict[str, Any], settings: ServeSettings, *, replicas: int = 2, replica_cpus: float = 1.0
) -> Any:
    """A bound Ray Serve deployment of ``replicas`` replicas, each running the service over
    ``MiniReranker.from_pretrained(**engine_options)`` (loaded when the replica starts, before it is ready) and
    reserving ``replica_cpus`` CPUs of the cluster (a GPU replica asks for its GPU in ``ray_actor_options``)."""
    from ray import serve

    def build() -> Any:  # runs on each replica
        from ..engine.reranker import MiniReranker
        from .app import create_app

        return create_app(MiniReranker.from_pretrained(**engine_options), settings)

    ingress = serve.ingress(build)()
    options = {"num_cpus": replica_cpus}
    return serve.deployment(name=APP_NAME, num_replicas=replicas, ray_actor_options=options)(ingress).bind()


def start(
    engine_options: dict[str, Any],
    settings: ServeSettings,
    *,
    replicas: int,
    host: str,
    port: int,
    replica_cpus: float = 1.0,
) -> None:
    """Start Ray Serve's HTTP proxy on ``host:port`` and deploy; returns once every replica is ready."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": host, "port": port})
    app = deployment(engine_options, settings, replicas=replicas, replica_cpus=replica_cpus)
    serve.run(app, name=APP_NAME, route_prefix="/")


def stop() -> None:
    """Remove the deployment and stop Ray Serve (the Ray cluster this process started stops with it)."""
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


def run(engine_options: dict[str, Any], settings: ServeSettings, *, replicas: int, host: str, port: int) -> None:
    """``minirerank serve --ray``: deploy, then serve until SIGTERM or Ctrl-C."""
    import signal
    import threading

    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    start(engine_options, settings, replicas=replicas, host=host, port=port)
    try:
        done.wait()
    finally:
        stop()
