"""``RemoteReranker``: the rerank calls of :class:`~minirerank_integrations.MiniReranker` (``rerank``, ``arerank``)
answered by a ``minirerank serve`` server (or any server speaking vLLM's ``/v1/rerank``) over HTTP, with httpx.

Images travel as ``image_url`` parts: an http(s) URL as itself (the server fetches it if its host is allowed),
everything else (a file, bytes, a PIL image, base64 text, a PDF page rendered here) as a ``data:`` URI, so that
the server scores exactly the pixels the local engine would. Videos travel as ``video_url`` parts the same way (a file, a ``file://`` URI or
bytes as a ``data:`` URI of the file's bytes); a video given as a list of frames is refused, as vLLM's API has no
form for one. Results come back as the engine's own :class:`RerankResults`, ids included.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
from PIL import Image

from .. import Candidate, PdfPage, Query, RerankResult, RerankResults, SkippedCandidate
from ..engine.images import load_image, read_image_file
from ..engine.pdf import parse_page_reference
from ..errors import CandidateError, ImageLoadError, InputError, MiniRerankError, VideoLoadError

__all__ = ["RemoteReranker"]

_DOCUMENT_PARAM = re.compile(r"^documents\[(\d+)\]")
_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp", "BMP": "image/bmp"}


class RemoteReranker:
    """A reranker served over HTTP: ``rerank`` and ``arerank`` as :class:`MiniReranker` has them.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8000`` (``/v1/rerank`` is appended).
        api_key: sent as ``Authorization: Bearer <key>`` when given.
        model: the model id sent in each request; None lets the server use its own.
        timeout: seconds one request may take.
    """

    def __init__(
        self, base_url: str, *, api_key: str | None = None, model: str | None = None, timeout: float = 120.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client: httpx.Client | None = None

    def __repr__(self) -> str:
        return f"RemoteReranker({self.base_url!r}, model={self.model!r})"

    def rerank(
        self,
        query: str | Query,
        candidates: Sequence[str | Candidate],
        *,
        top_n: int | None = None,
        on_error: str = "raise",
    ) -> RerankResults:
        """As :meth:`MiniReranker.rerank`, scored by the server."""
        body, ids = self._body(query, candidates, on_error)
        if self._client is None:
            self._client = httpx.Client(base_url=self.base_url, headers=self._headers, timeout=self.timeout)
        try:
            response = self._client.post("/v1/rerank", json=body)
        except httpx.HTTPError as exc:
            raise MiniRerankError(f"the rerank server at {self.base_url} failed: {type(exc).__name__}: {exc}") from exc
        return _results(response, ids, top_n)

    async def arerank(
        self,
        query: str | Query,
        candidates: Sequence[str | Candidate],
        *,
        top_n: int | None = None,
        on_error: str = "raise",
    ) -> RerankResults:
        """As :meth:`MiniReranker.arerank`: natively async (httpx.AsyncClient); files are read on a thread."""
        body, ids = await asyncio.to_thread(self._body, query, candidates, on_error)
        try:
            async with httpx.AsyncClient(base_url=self.base_url, headers=self._headers, timeout=self.timeout) as c:
                response = await c.post("/v1/rerank", json=body)
        except httpx.HTTPError as exc:
            raise MiniRerankError(f"the rerank server at {self.base_url} failed: {type(exc).__name__}: {exc}") from exc
        return _results(response, ids, top_n)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- the wire format ----------------------------------------------------------------------------

    def _body(
        self, query: str | Query, candidates: Sequence[str | Candidate], on_error: str
    ) -> tuple[dict[str, Any], list[str | None]]:
        if isinstance(candidates, (str, bytes, Candidate)) or not isinstance(candidates, Sequence):
            raise InputError(f"rerank takes a list of candidates, got a {type(candidates).__name__}")
        query = Query(text=query) if isinstance(query, str) else query
        documents: list[str | dict[str, Any]] = []
        ids: list[str | None] = []
        for index, candidate in enumerate(candidates):
            if isinstance(candidate, str):
                documents.append(candidate)
                ids.append(None)
                continue
            try:
                documents.append(_item(candidate.text, candidate.images, candidate.videos))
            except MiniRerankError as exc:
                raise CandidateError(index, exc, candidate.id) from exc
            ids.append(candidate.id)
        try:
            wire_query = _item(query.text, query.images, query.videos)
        except MiniRerankError as exc:
            raise InputError(f"the query: {exc}") from exc
        body: dict[str, Any] = {"query": wire_query, "documents": documents, "on_error": on_error}
        if self.model is not None:
            body["model"] = self.model
        return body, ids


def _item(text: str | None, images: Sequence[object], videos: Sequence[object] = ()) -> str | dict[str, Any]:
    if not images and not videos:
        return text if text is not None else ""
    # The official order inside a side: videos, then images, then text (the server reads them in that order too).
    parts: list[dict[str, Any]] = [
        {"type": "video_url", "video_url": {"url": _video_url(video, number)}} for number, video in enumerate(videos)
    ]
    parts += [{"type": "image_url", "image_url": {"url": _image_url(image)}} for image in images]
    if text is not None:
        parts.append({"type": "text", "text": text})
    return {"content": parts}


def _image_url(image: object) -> str:
    if isinstance(image, str) and len(image) < 4096:
        image = parse_page_reference(image) or image  # "file.pdf#page=N", as the engine reads it
    if isinstance(image, PdfPage):
        # Rendered here as the engine renders it (pypdfium2 at the page's scale) and sent losslessly, so the
        # server scores the very pixels the local engine would; ImageLoadError names the page.
        image = load_image(image)
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")  # lossless: the server sees the same pixels
        return _data_uri(buffer.getvalue())
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _data_uri(bytes(image))
    if isinstance(image, os.PathLike) or (isinstance(image, str) and _is_file(image)):
        # As the engine reads files: regular files only, capped (a FIFO or /dev/zero neither blocks nor fills memory).
        return _data_uri(read_image_file(image))  # ImageLoadError (an InputError) names the file and why
    if isinstance(image, str):
        text = image.strip()
        if text[:5].lower() == "data:" or text.lower().startswith(("http://", "https://")):
            return text
        return "data:image/*;base64," + "".join(text.split())  # base64 text, as the engine accepts it
    raise InputError(f"an image must be a path, bytes, a PIL image, a data: URI or a URL, got {type(image).__name__}")


def _video_url(video: object, number: int) -> str:
    if isinstance(video, (list, tuple)):
        raise InputError(
            f"video {number} is a list of {len(video)} frames, which vLLM's video_url parts cannot carry; send the "
            "video's file, bytes or URL"
        )
    if isinstance(video, (bytes, bytearray, memoryview)):
        return _video_data_uri(bytes(video))
    if isinstance(video, str) and video.strip()[:7].lower() == "file://":
        return _video_data_uri(_read_video(unquote(urlsplit(video.strip()).path), number))
    if isinstance(video, os.PathLike) or (isinstance(video, str) and _is_file(video)):
        return _video_data_uri(_read_video(video, number))
    if isinstance(video, str):
        text = video.strip()
        if text[:5].lower() == "data:" or text.lower().startswith(("http://", "https://")):
            return text
        raise VideoLoadError(f"video {number} {video!r}: no such file (a video is a path, file:// URI, URL or bytes)")
    raise InputError(f"video {number}: a video must be a path, bytes or a URL, got {type(video).__name__}")


def _read_video(path: str | os.PathLike, number: int) -> bytes:
    try:  # the image files' reader: regular files only, without blocking, capped
        return read_image_file(path)
    except ImageLoadError as exc:
        raise VideoLoadError(f"video {number} {exc}") from exc


def _video_data_uri(data: bytes) -> str:
    # The server decodes by content; the type only tells a reader of the request what the bytes are.
    if data[4:8] == b"ftyp":
        mime = "video/mp4"
    elif data[:4] == b"\x1a\x45\xdf\xa3":
        mime = "video/webm"
    elif data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        mime = "video/x-msvideo"
    else:
        mime = "video/*"
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _is_file(text: str) -> bool:
    return len(text) < 4096 and not text.lower().startswith(("data:", "http://", "https://")) and os.path.isfile(text)


def _data_uri(data: bytes) -> str:
    try:
        with Image.open(io.BytesIO(data)) as opened:
            mime = _MIME.get(opened.format or "", "image/*")
    except (OSError, ValueError, SyntaxError):
        mime = "image/*"  # the server names what is wrong with it
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _results(response: httpx.Response, ids: list[str | None], top_n: int | None) -> RerankResults:
    if response.status_code != 200:
        try:
            error = response.json()["error"]
            message, param = str(error["message"]), error.get("param") or ""
        except (ValueError, KeyError, TypeError):
            message, param = response.text[:500], ""
        found = _DOCUMENT_PARAM.match(param)
        if response.status_code == 422 and found:
            index = int(found.group(1))
            cause = message.split(": ", 1)[1] if message.startswith("documents[") and ": " in message else message
            raise CandidateError(index, InputError(cause), ids[index] if index < len(ids) else None)
        kind = InputError if response.status_code in (400, 413, 422) else MiniRerankError
        raise kind(f"the rerank server answered {response.status_code}: {message}")
    body = response.json()
    results = [RerankResult(r["index"], float(r["relevance_score"]), ids[r["index"]]) for r in body["results"]]
    skipped = [SkippedCandidate(s["index"], s["error"], ids[s["index"]]) for s in body.get("skipped") or ()]
    return RerankResults(results if top_n is None else results[:top_n], skipped)
