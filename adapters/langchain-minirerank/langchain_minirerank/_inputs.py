"""Turn LangChain documents and query strings into the engine's ``Candidate`` and ``Query``.

Only the shape of the inputs is decided here; reading and decoding images is the engine's job, so a
bad image reaches the engine and is reported under its ``on_error`` policy.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.documents import Document
from minirerank_integrations import Candidate, Query

# Base64 characters decoded to sniff a header: 64 chars -> 48 bytes, enough for every signature below.
_SNIFF_CHARS = 64
# The smallest valid image of the formats below (a 1x1 GIF) is 35 bytes, i.e. 48 base64 characters;
# shorter text is never treated as an image.
_MIN_IMAGE_CHARS = 48
# Sizes of the BMP info headers (BITMAPCOREHEADER .. BITMAPV5HEADER), read at byte 14. "BM" alone is
# two ordinary letters, so a BMP also needs a known header size.
_BMP_INFO_HEADER_SIZES = (12, 16, 40, 52, 56, 64, 108, 124)


@dataclass(frozen=True)
class ImageKeys:
    """Which ``Document.metadata`` keys carry an image, and how their values are read."""

    paths: tuple[str, ...]
    base64: tuple[str, ...]
    urls: tuple[str, ...]  # empty unless an image fetcher was given
    mime_type: str | None


def has_image_header(data: bytes) -> bool:
    """Whether ``data`` starts like a PNG, JPEG, GIF, WEBP, BMP or TIFF file."""
    if data.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*")):
        return True
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return True
    if data[:2] == b"BM" and len(data) >= 18:
        return int.from_bytes(data[14:18], "little") in _BMP_INFO_HEADER_SIZES
    return False


def is_base64_image(text: str) -> bool:
    """Whether ``text`` is base64 whose decoded bytes begin with an image file signature.

    Only the first few dozen characters are decoded: the header decides. A string with a valid header
    but a damaged body is still an image (a corrupt one), so the engine reports it instead of scoring
    it as text. Line breaks, as in base64 wrapped at 76 columns, are ignored.
    """
    head = "".join(text[: 2 * _SNIFF_CHARS].split())[:_SNIFF_CHARS]
    if len(head) < _MIN_IMAGE_CHARS or len(text) < _MIN_IMAGE_CHARS:
        return False
    head = head[: len(head) // 4 * 4]
    try:
        return has_image_header(base64.b64decode(head, validate=True))
    except (binascii.Error, ValueError):
        return False


def is_image_data_uri(text: str) -> bool:
    """Whether ``text`` is a ``data:image/...`` URI."""
    return text.lstrip()[:11].lower() == "data:image/"


def is_image_string(text: str) -> bool:
    """Whether a ``page_content`` or query string is an image: an image data URI or base64 image bytes."""
    return is_image_data_uri(text) or is_base64_image(text)


def query_from_text(query: str, *, image_paths: bool) -> Query | str:
    """The engine query for a LangChain query string.

    An image data URI or base64 image is an image query. With ``image_paths``, a string naming an
    existing file is an image query too. Anything else is a text query.
    """
    if is_image_string(query):
        return Query(images=(query,))
    if image_paths and _is_file(query):
        return Query(images=(Path(query),))
    return query


def candidate_from_document(document: Document, keys: ImageKeys) -> Candidate:
    """The engine candidate for a document: its images and its text.

    ``page_content`` is an image when it is an image data URI or base64 image bytes (as vector stores
    such as Chroma store images), or when the metadata's media type is ``image/*`` and no metadata key
    holds an image (the type then describes ``page_content``); otherwise it is text. Metadata images
    follow in key order.
    """
    metadata = document.metadata
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
    content = document.page_content
    if is_image_string(content) or (declared_image and not extra and content.strip()):
        return Candidate(images=(content, *extra), id=document.id)
    return Candidate(text=content if content.strip() else None, images=tuple(extra), id=document.id)


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
    # (and anything that is not a string) go to the engine as they are.
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
