"""Turn LangChain documents and query strings into the engine's ``Candidate`` and ``Query``.

Only the shape of the inputs is decided here; reading and decoding images is the engine's job, so a
bad image reaches the engine and is reported under its ``on_error`` policy. :func:`minirerank_integrations.engine.documents.copied_metadata` makes
the metadata of the copies returned.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.documents import Document
from minirerank_integrations import Candidate, PdfPage, Query, is_image_string  # the one rule: which strings are images


@dataclass(frozen=True)
class ImageKeys:
    """Which ``Document.metadata`` keys carry an image or a video, and how their values are read."""

    paths: tuple[str, ...]
    base64: tuple[str, ...]
    urls: tuple[str, ...]  # empty unless something can fetch them (an image fetcher, or the server in remote mode)
    mime_type: str | None
    video_paths: tuple[str, ...] = ()
    video_urls: tuple[str, ...] = ()  # read under the same rule as ``urls``


def query_from_text(query: str, *, image_paths: bool) -> Query | str:
    """The engine query for a LangChain query string.

    A string the engine's :func:`is_image_string` calls an image (a data URI, base64 image data, or a
    damaged one) is an image query. With ``image_paths``, a string naming an
    existing file is an image query too. Anything else is a text query.
    """
    if is_image_string(query):
        return Query(images=(query,))
    if image_paths and _is_file(query):
        return Query(images=(Path(query),))
    return query


def candidate_from_document(document: Document, keys: ImageKeys) -> Candidate:
    """The engine candidate for a document: its videos, its images and its text.

    ``page_content`` is an image when the engine's :func:`is_image_string` says so (an image data URI or
    base64 image bytes, as vector stores such as Chroma store images, or damaged ones: these then fail as
    unreadable images instead of being scored as text), or when the metadata's media type is ``image/*`` and no metadata key
    holds an image (the type then describes ``page_content``); otherwise it is text. Metadata images
    follow in key order.

    A document from a PDF loader (``PyPDFLoader``, ``PyPDFium2Loader``, ``PyMuPDFLoader``: ``metadata["source"]``
    naming a ``.pdf`` file and an int ``metadata["page"]`` counted from 0) with no metadata image is its
    rendered page alone: the page is scored as it looks, and its extracted text is a lossy copy of that.

    Videos come from metadata only: the values of ``keys.video_paths`` (a file path or ``file://`` URI, or a list)
    and ``keys.video_urls`` (http(s) URLs), in key order; they never change what ``page_content`` is.
    """
    metadata = document.metadata
    videos: list[Any] = []
    for key in keys.video_paths:
        videos.extend(_as_path(value) for value in _values(metadata, key))
    for key in keys.video_urls:
        videos.extend(_values(metadata, key))
    page = pdf_page_of(metadata)
    mime_type = metadata.get(keys.mime_type) if keys.mime_type else None
    declared_image = isinstance(mime_type, str) and mime_type.lower().startswith("image/")
    extra: list[Any] = []
    for key in keys.paths:
        extra.extend(_as_path(value) for value in _values(metadata, key))
    for key in keys.base64:
        extra.extend(
            _as_base64_source(value, mime_type if declared_image else None) for value in _values(metadata, key)
        )
    for key in keys.urls:
        extra.extend(_values(metadata, key))
    if page is not None and not extra and not videos:
        return Candidate(images=(page,), id=document.id)
    content = document.page_content
    if is_image_string(content) or (declared_image and not extra and content.strip()):
        return Candidate(images=(content, *extra), id=document.id, videos=tuple(videos))
    return Candidate(
        text=content if content.strip() else None, images=tuple(extra), id=document.id, videos=tuple(videos)
    )


def pdf_page_of(metadata: Mapping[str, Any]) -> PdfPage | None:
    """The PDF page a loader's metadata names (``source`` ending in ``.pdf`` and an int ``page``), or None."""
    source, page = metadata.get("source"), metadata.get("page")
    if not isinstance(source, (str, os.PathLike)) or not os.fspath(source).lower().endswith(".pdf"):
        return None
    if isinstance(page, bool) or not isinstance(page, int) or page < 0:
        return None
    return PdfPage(source, index=page)


# --- internals -------------------------------------------------------------------------------------------


def _values(metadata: Mapping[str, Any], key: str) -> list[Any]:
    """A metadata value as a list: absent or None -> [], one value -> [value], a list -> the list."""
    value = metadata.get(key)
    if value is None:
        return []
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray)):
        return list(value)
    return [value]


def _as_path(value: Any) -> Any:
    # A path key's string is a file path, never base64 that happens to look like one; file:// URIs
    # (and anything that is not a string, such as a video's list of frames) go to the engine as they are.
    if isinstance(value, str) and "://" not in value:
        return Path(value)
    return value


def _as_base64_source(value: Any, mime_type: str | None) -> Any:
    # Plain base64 with its declared image type becomes a data URI: the engine then reads it as
    # base64 only, never as a file name, and names the type in its error messages.
    if isinstance(value, str) and mime_type is not None and not value.lstrip().lower().startswith("data:"):
        return f"data:{mime_type};base64,{value.strip()}"
    return value


def _is_file(text: str) -> bool:
    try:
        return len(text) < 4096 and os.path.isfile(text)
    except (OSError, ValueError):
        return False
