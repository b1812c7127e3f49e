"""Remote mode: ``MiniRerankCompressor(base_url=...)`` reranks through a ``minirerank serve`` server.

Documents are converted exactly as in local mode; their images travel as ``image_url`` parts (data URIs for
files and base64), so the server scores the same pixels as a model loaded in this process would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when remote mode is used: httpx is needed only then
    from minirerank_integrations.serve.client import RemoteReranker


def remote_reranker(base_url: str, api_key: str | None, model: object, given: list[str]) -> RemoteReranker:
    """The client for ``base_url``.

    Raises:
        ValueError: ``model`` is a loaded engine, or a loading option was given (``given``): neither would be used.
    """
    if not isinstance(model, str):
        raise ValueError("with base_url, model is the served model id (a str), not a loaded engine or a path")
    if given:
        raise ValueError(
            f"{', '.join(given)} only apply when MiniRerankCompressor loads the model; with base_url the server's "
            "own model and configuration are used (set them with `minirerank serve`)"
        )
    from minirerank_integrations.serve.client import RemoteReranker

    return RemoteReranker(base_url, api_key=api_key, model=model)
