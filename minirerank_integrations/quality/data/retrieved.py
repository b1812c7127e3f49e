"""Adaptation groups from a retriever the user already has: documents plus the candidate ids it returned.

Documents are read by the engine's one document reader (:mod:`...engine.documents`, as ``minirerank
precache`` reads them): a folder (each image or text file one document, each PDF one per page; its id is its
path relative to the folder, ``file.pdf#page=N`` for a page) or JSONL files of ``{"id": ..., "text": ...,
"images": [...]}`` lines (image paths relative to that file) or LlamaIndex / LangChain dumps (read by their
adapter packages into what the adapters score). Every document needs a unique id. Queries are a JSONL file,
one line per query::

    {"id": "q1", "text": "red header invoice", "images": [], "candidates": ["doc-17", "doc-3", ...]}

with optional ``"relevance"`` (one integer per candidate) when labels exist. docs/adaptation.md shows how to
dump such a file from a LlamaIndex or LangChain retriever.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ...engine.documents import read_documents
from ...engine.inputs import Candidate, Query
from ...errors import InputError
from .jsonl import read_images, read_object, read_text
from .tasks import RerankTask

__all__ = ["load_documents", "load_retrieved"]


def load_documents(source: str | os.PathLike) -> dict[str, Candidate]:
    """Documents by id, from a folder or a JSONL file (see the module docstring).

    Raises:
        InputError: the source is missing, a line breaks the format or has no id, an id repeats, a document
            file cannot be read, or the folder holds no document.
    """
    path = Path(source)
    folder = path.is_dir()
    if not folder and not path.is_file():
        raise InputError(f"{path}: no such file or folder")
    documents: dict[str, Candidate] = {}
    for document in read_documents([path], require_ids=not folder):
        doc_id = document.id
        if folder and doc_id is not None and Path(doc_id).is_relative_to(path):
            doc_id = Path(doc_id).relative_to(path).as_posix()  # a file's id: its path within the folder
        if not isinstance(doc_id, str) or not doc_id:
            raise InputError(f"{path}: a document has no id ({document!r})")
        if doc_id in documents:
            raise InputError(f"{path}: document id {doc_id!r} already used; ids must be unique")
        documents[doc_id] = Candidate(text=document.text, images=document.images, id=doc_id)
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
        record = read_object(raw, where)
        query_id = record.get("id")
        if not isinstance(query_id, str) or not query_id or query_id in seen:
            raise InputError(f"{where}: 'id' must be a unique non-empty string, got {query_id!r}")
        seen.add(query_id)
        query = Query(
            text=read_text(record, f"{where}, query"), images=read_images(record, path.parent, f"{where}, query")
        )
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
