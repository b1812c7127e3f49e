"""Adaptation groups from a retriever the user already has: documents plus the candidate ids it returned.

Documents are a folder (each file one document: an image file is an image candidate, a ``.txt``/``.md`` file
a text candidate; its id is its path relative to the folder) or a JSONL file of
``{"id": ..., "text": ..., "images": [...]}`` lines (image paths relative to that file). Queries are a JSONL
file, one line per query::

    {"id": "q1", "text": "red header invoice", "images": [], "candidates": ["doc-17", "doc-3", ...]}

with optional ``"relevance"`` (one integer per candidate) when labels exist. docs/adaptation.md shows how to
dump such a file from a LlamaIndex or LangChain retriever.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ...engine.inputs import Candidate, Query
from ...errors import InputError
from .jsonl import _images, _object, _text
from .tasks import RerankTask

__all__ = ["IMAGE_SUFFIXES", "TEXT_SUFFIXES", "load_documents", "load_retrieved"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
TEXT_SUFFIXES = (".txt", ".md")


def load_documents(source: str | os.PathLike) -> dict[str, Candidate]:
    """Documents by id, from a folder or a JSONL file (see the module docstring).

    Raises:
        InputError: the source is missing, a line breaks the format, an id repeats, or the folder holds no
            document.
    """
    path = Path(source)
    documents: dict[str, Candidate] = {}
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            doc_id = file.relative_to(path).as_posix()
            suffix = file.suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                documents[doc_id] = Candidate(images=[str(file.resolve())], id=doc_id)
            elif suffix in TEXT_SUFFIXES:
                documents[doc_id] = Candidate(text=file.read_text(encoding="utf-8"), id=doc_id)
        if not documents:
            raise InputError(f"{path}: no documents (image files or {', '.join(TEXT_SUFFIXES)} files) in the folder")
        return documents
    for where, record in _lines(path):
        doc = _object(record, where)
        doc_id = doc.get("id")
        if not isinstance(doc_id, str) or not doc_id:
            raise InputError(f"{where}: 'id' must be a non-empty string, got {doc_id!r}")
        if doc_id in documents:
            raise InputError(f"{where}: document id {doc_id!r} already used; ids must be unique")
        candidate = Candidate(text=_text(doc, where), images=_images(doc, path.parent, where), id=doc_id)
        if candidate.is_empty:
            raise InputError(f"{where}: document {doc_id!r} has neither text nor images")
        documents[doc_id] = candidate
    return documents


def load_retrieved(documents: str | os.PathLike, queries: str | os.PathLike) -> list[RerankTask]:
    """One task per query line: the query and its retrieved candidates (labelled only when the line has
    ``relevance``).

    Raises:
        InputError: a malformed line, or a candidate id not among the documents (the message names the query
            and the id).
    """
    docs = load_documents(documents)
    path = Path(queries)
    tasks: list[RerankTask] = []
    seen: set[str] = set()
    for where, raw in _lines(path):
        record = _object(raw, where)
        query_id = record.get("id")
        if not isinstance(query_id, str) or not query_id or query_id in seen:
            raise InputError(f"{where}: 'id' must be a unique non-empty string, got {query_id!r}")
        seen.add(query_id)
        query = Query(text=_text(record, f"{where}, query"), images=_images(record, path.parent, f"{where}, query"))
        if query.is_empty:
            raise InputError(f"{where}: query {query_id!r} has neither text nor images")
        ids = record.get("candidates")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise InputError(f"{where}: 'candidates' must be a non-empty list of document ids")
        missing = [i for i in ids if i not in docs]
        if missing:
            raise InputError(f"{where}: candidate {missing[0]!r} of query {query_id!r} is not among the documents")
        if len(set(ids)) != len(ids):
            raise InputError(f"{where}: query {query_id!r} lists a candidate twice")
        labelled = "relevance" in record
        relevance = record.get("relevance", [0] * len(ids))
        if not isinstance(relevance, list) or len(relevance) != len(ids):
            raise InputError(f"{where}: 'relevance' must give one integer per candidate")
        tasks.append(
            RerankTask(
                id=query_id,
                family=str(record.get("family", "custom")),
                query=query,
                candidates=[docs[i] for i in ids],
                relevance=relevance,
                labelled=labelled,
            )
        )
    if not tasks:
        raise InputError(f"{path}: no queries")
    return tasks


def _lines(path: Path) -> list[tuple[str, Any]]:
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    out = []
    with path.open(encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            if raw.strip():
                where = f"{path} line {number}"
                try:
                    out.append((where, json.loads(raw)))
                except json.JSONDecodeError as exc:
                    raise InputError(f"{where}: not valid JSON: {exc}") from exc
    return out
