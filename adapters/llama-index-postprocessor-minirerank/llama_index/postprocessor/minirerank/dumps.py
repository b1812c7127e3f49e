"""LlamaIndex node dumps read back as the candidates :class:`MiniRerank` scores.

A dump line is what LlamaIndex writes for a node: ``node.to_dict()`` (its fields plus ``class_name``) or a
docstore record (``doc_to_json``: ``{"__type__": ..., "__data__": {...}}``). It is rebuilt as that node class
and converted by :func:`node_to_candidate`, as the postprocessor converts a node with its default settings
(``metadata_mode=EMBED``, no image fetcher), so a node pre-cached from its dump (``minirerank precache``) has
the prefix key the postprocessor looks up: a ``PDFReader`` node is its rendered page, an image node its image.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llama_index.core.bridge.pydantic import ValidationError
from llama_index.core.schema import (
    BaseNode,
    Document,
    ImageDocument,
    ImageNode,
    IndexNode,
    Node,
    TextNode,
)
from llama_index.core.storage.docstore.utils import json_to_doc
from minirerank_integrations import Candidate, InputError, MiniRerankError

from ._convert import node_to_candidate
from .base import MiniRerank

__all__ = ["candidate_from_dump", "is_dump", "node_from_dump"]

_NODE_CLASSES: dict[str, type[BaseNode]] = {
    cls.class_name(): cls for cls in (TextNode, ImageNode, IndexNode, Document, ImageDocument, Node)
}


def is_dump(record: Mapping[str, Any]) -> bool:
    """Whether a JSON object is a LlamaIndex node dump (either shape)."""
    return "id_" in record or "class_name" in record or "text_resource" in record or "__data__" in record


def node_from_dump(record: Mapping[str, Any], where: str) -> BaseNode:
    """The node a dump line holds; ``where`` names the line in errors.

    Raises:
        InputError: not a node dump (an unknown class, a field of the wrong type).
    """
    try:
        if "__data__" in record:
            return json_to_doc(dict(record))
        name = record.get("class_name", TextNode.class_name())
        cls = _NODE_CLASSES.get(name) if isinstance(name, str) else None
        if cls is None:
            known = ", ".join(sorted(_NODE_CLASSES))
            raise InputError(f"{where}: class_name {name!r} is not a LlamaIndex node class ({known})")
        return cls.from_dict(dict(record))
    except ValidationError as error:
        first = error.errors()[0]
        place = ".".join(str(part) for part in first["loc"]) or "the node"
        raise InputError(f"{where}: not a LlamaIndex node: {place}: {first['msg']}") from error
    except (ValueError, TypeError, KeyError) as error:  # json_to_doc on an unknown __type__ or a malformed record
        raise InputError(f"{where}: not a LlamaIndex node: {type(error).__name__}: {error}") from error


def candidate_from_dump(record: Mapping[str, Any], where: str) -> Candidate:
    """The candidate the postprocessor (default settings) scores for the node a dump line holds.

    Raises:
        InputError: not a node dump, or a node the postprocessor could not score; the message names ``where``.
    """
    node = node_from_dump(record, where)
    try:
        return node_to_candidate(node, _DEFAULT_METADATA_MODE, None)
    except MiniRerankError as error:
        raise InputError(f"{where}: {error}") from error


# The postprocessor's default, read from its field (no second copy).
_DEFAULT_METADATA_MODE = MiniRerank.model_fields["metadata_mode"].default
