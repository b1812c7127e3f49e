"""LangChain ``Document`` dumps read back as the candidates :class:`MiniRerankCompressor` scores.

A dump line is what LangChain writes for a document: ``doc.model_dump()`` (``page_content``, ``metadata``,
``id``, ``type``) or ``langchain_core.load.dumpd(doc)`` (``{"lc": 1, "type": "constructor", "id": [...,
"Document"], "kwargs": {...}}``). It is rebuilt as a ``Document`` and converted by the compressor's own
conversion with its default metadata keys, so a document pre-cached from its dump (``minirerank precache``)
has the prefix key the compressor looks up: a ``PyPDFLoader`` page is its rendered page, not its text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.documents import Document
from minirerank_integrations import Candidate, InputError
from pydantic import ValidationError

from ._inputs import ImageKeys, candidate_from_document
from .rerank import MiniRerankCompressor

__all__ = ["candidate_from_dump", "document_from_dump", "is_dump"]


def is_dump(record: Mapping[str, Any]) -> bool:
    """Whether a JSON object is a LangChain document dump (either shape)."""
    return "page_content" in record or (record.get("lc") == 1 and record.get("type") == "constructor")


def document_from_dump(record: Mapping[str, Any], where: str) -> Document:
    """The ``Document`` a dump line holds; ``where`` names the line in errors.

    Raises:
        InputError: the line is not a document dump (another serialized object, a field of the wrong type).
    """
    fields: Any = record
    if record.get("lc") == 1:
        path = record.get("id")
        if not isinstance(path, list) or not path or path[-1] != "Document" or record.get("type") != "constructor":
            raise InputError(f"{where}: a LangChain dump of {path!r}, not of a Document")
        fields = record.get("kwargs")
        if not isinstance(fields, dict):
            raise InputError(f"{where}: the dump's kwargs must be a JSON object, got {type(fields).__name__}")
    try:
        return Document.model_validate(fields)
    except ValidationError as error:
        first = error.errors()[0]
        place = ".".join(str(part) for part in first["loc"]) or "the document"
        raise InputError(f"{where}: not a LangChain Document: {place}: {first['msg']}") from error


def candidate_from_dump(record: Mapping[str, Any], where: str) -> Candidate:
    """The candidate the compressor (default settings) scores for the document a dump line holds.

    Raises:
        InputError: not a document dump, or a document the compressor could not score (no content, an image
            value that is not a path or base64 text); the message names ``where``.
    """
    document = document_from_dump(record, where)
    try:
        return candidate_from_document(document, _DEFAULT_KEYS)
    except InputError as error:
        raise InputError(f"{where}: {error}") from error


def _default(name: str) -> Any:
    return MiniRerankCompressor.model_fields[name].default


# The compressor's defaults, read from its fields (no second copy). URLs are read only with a fetcher, as in
# the compressor, and a dump carries none.
_DEFAULT_KEYS = ImageKeys(
    paths=_default("image_path_keys"),
    base64=_default("image_base64_keys"),
    urls=(),
    mime_type=_default("mime_type_key"),
    video_paths=_default("video_path_keys"),
    video_urls=(),
)
