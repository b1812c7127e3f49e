"""Remote mode: ``MiniRerank(base_url=...)`` scores through a ``minirerank serve`` server instead of a model loaded
in this process. Nodes are converted exactly as in local mode; the client sends their images as ``image_url``
parts (data URIs for local files and bytes), so the server scores the same pixels and returns the same scores."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when remote mode is used: httpx is needed only then
    from minirerank_integrations.serve.client import RemoteReranker

#: Options that only shape how a model is loaded in this process; the server loaded its own.
_LOCAL_ONLY = ("config", "cache_dir", "cache_url", "store", "device", "dtype", "batch_size")


def remote_engine(
    base_url: str, api_key: str | None, model: str, **local: Any
) -> tuple[RemoteReranker, dict[str, Any]]:
    """The client for ``base_url`` and the fields the component records; ``ValueError`` when a local-loading
    option was given too (it would be silently ignored)."""
    given = [name for name in _LOCAL_ONLY if local.get(name) is not None]
    if given:
        raise ValueError(
            f"{', '.join(given)} only apply when MiniRerank loads the model itself; with base_url the server's "
            "own model and configuration are used (set them with `minirerank serve`)"
        )
    from minirerank_integrations.serve.client import RemoteReranker

    return RemoteReranker(base_url, api_key=api_key, model=model), {"model": model, "base_url": base_url}
