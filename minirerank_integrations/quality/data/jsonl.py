"""Reranking tasks on disk: a directory with ``tasks.jsonl`` (one query per line) and PNG files under ``images/``.

The format is described for users in ``docs/data-format.md``. One line::

    {"id": "q1", "family": "text_to_image",
     "query": {"text": "two red circles on the left", "images": []},
     "candidates": [{"id": "q1/000", "text": null, "images": ["images/000000_c000_0.png"]}, ...],
     "relevance": [1, 0, ...]}
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ...engine.images import load_image
from ...engine.inputs import Candidate, ImageSource, Query
from ...errors import InputError
from .tasks import RerankTask

__all__ = ["TASKS_FILE", "load_tasks", "read_images", "read_object", "read_text", "save_tasks"]

TASKS_FILE = "tasks.jsonl"
IMAGES_DIR = "images"
#: Image references kept as they are on load instead of being resolved against the directory.
_PASS_THROUGH_PREFIXES = ("http://", "https://", "data:", "file://")


def save_tasks(
    tasks: Iterable[RerankTask], directory: str | os.PathLike, *, overwrite: bool = False, labels: bool = True
) -> Path:
    """Write tasks as ``directory/tasks.jsonl`` plus ``directory/images/*.png``; returns the JSONL path.

    Every image (PIL image, path, bytes, base64...) is decoded and written as an RGB PNG, named by the task's
    position in ``tasks``: ``images/<task>_q<k>.png`` for query images, ``images/<task>_c<candidate>_<k>.png``
    for candidate images. Paths in the file are relative to ``directory``.

    Raises:
        FileExistsError: ``tasks.jsonl`` exists and ``overwrite`` is false.
        ImageLoadError: an image source cannot be read (e.g. a URL without a fetcher).
    """
    root = Path(directory)
    jsonl_path = root / TASKS_FILE
    if jsonl_path.exists() and not overwrite:
        raise FileExistsError(f"{jsonl_path} exists; pass overwrite=True or choose an empty directory")
    (root / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    lines = []
    for t, task in enumerate(tasks):
        query: dict[str, Any] = {
            "text": task.query.text,
            "images": [_write_image(root, f"{t:06d}_q{k}", image) for k, image in enumerate(task.query.images)],
        }
        if task.query_attributes:
            query["attributes"] = dict(task.query_attributes)
        candidates = []
        for j, candidate in enumerate(task.candidates):
            record: dict[str, Any] = {
                "id": task.candidate_key(j),
                "text": candidate.text,
                "images": [
                    _write_image(root, f"{t:06d}_c{j:03d}_{k}", image) for k, image in enumerate(candidate.images)
                ],
            }
            if task.candidate_attributes:
                record["attributes"] = dict(task.candidate_attributes[j])
            candidates.append(record)
        line: dict[str, Any] = {
            "id": task.id,
            "family": task.family,
            "query": query,
            "candidates": candidates,
        }
        if task.labelled and labels:
            line["relevance"] = list(task.relevance)
        lines.append(json.dumps(line, ensure_ascii=False))
    jsonl_path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return jsonl_path


def load_tasks(path: str | os.PathLike) -> list[RerankTask]:
    """Read tasks from a directory holding ``tasks.jsonl`` (or from a ``.jsonl`` file itself).

    Relative image paths are resolved against the file's directory and returned as absolute path strings,
    which the engine reads; ``http(s)://``, ``data:`` and ``file://`` references are kept as written.

    Raises:
        InputError: the file is missing or a line breaks the format; the message names the file and line.
    """
    jsonl_path = Path(path)
    if jsonl_path.is_dir():
        jsonl_path = jsonl_path / TASKS_FILE
    if not jsonl_path.is_file():
        raise InputError(f"{jsonl_path}: no such file; pass a directory holding {TASKS_FILE} or a .jsonl file")
    root = jsonl_path.parent
    tasks: list[RerankTask] = []
    seen: set[str] = set()
    with jsonl_path.open(encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            where = f"{jsonl_path} line {number}"
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise InputError(f"{where}: not valid JSON: {exc}") from exc
            task = _parse_task(record, root, where)
            if task.id in seen:
                raise InputError(f"{where}: task id {task.id!r} already used; task ids must be unique")
            seen.add(task.id)
            tasks.append(task)
    return tasks


def read_object(value: Any, where: str) -> dict[str, Any]:
    """``value`` when it is a JSON object; an :class:`InputError` naming ``where`` otherwise."""
    if not isinstance(value, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def read_text(record: Mapping[str, Any], where: str) -> str | None:
    """A record's ``text``: a string or null (absent)."""
    text = record.get("text")
    if text is not None and not isinstance(text, str):
        raise InputError(f"{where}: 'text' must be a string or null, got {type(text).__name__}")
    return text


def read_images(record: Mapping[str, Any], root: Path, where: str) -> list[str]:
    """A record's ``images``: path strings read from ``root`` (each must exist) or URIs kept as written."""
    images = record.get("images", [])
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise InputError(f"{where}: 'images' must be a list of path strings, got {images!r}")
    resolved = []
    for image in images:
        if image.startswith(_PASS_THROUGH_PREFIXES):
            resolved.append(image)
            continue
        path = (root / image) if not os.path.isabs(image) else Path(image)
        if not path.is_file():
            raise InputError(f"{where}: image file {image!r} not found (looked at {path})")
        resolved.append(str(path.resolve()))
    return resolved


# --- internals -------------------------------------------------------------------------------------------


def _write_image(root: Path, stem: str, source: ImageSource) -> str:
    relative = f"{IMAGES_DIR}/{stem}.png"
    load_image(source).save(root / relative, format="PNG")
    return relative


def _parse_task(record: Any, root: Path, where: str) -> RerankTask:
    if not isinstance(record, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for key in ("id", "query", "candidates"):
        if key not in record:
            raise InputError(f"{where}: missing required key {key!r}")
    task_id = record["id"]
    if not isinstance(task_id, str) or not task_id:
        raise InputError(f"{where}: 'id' must be a non-empty string, got {task_id!r}")
    family = record.get("family", "custom")
    query_record = read_object(record["query"], f"{where}, query")
    query = Query(
        text=read_text(query_record, f"{where}, query"), images=read_images(query_record, root, f"{where}, query")
    )
    if query.is_empty:
        raise InputError(f"{where}: the query has neither text nor images")
    raw_candidates = record["candidates"]
    if not isinstance(raw_candidates, list) or not raw_candidates:
        raise InputError(f"{where}: 'candidates' must be a non-empty list")
    candidates, attributes = [], []
    for j, raw in enumerate(raw_candidates):
        place = f"{where}, candidate {j}"
        candidate_record = read_object(raw, place)
        candidate_id = candidate_record.get("id", f"{task_id}/{j}")
        if not isinstance(candidate_id, str):
            raise InputError(f"{place}: 'id' must be a string, got {candidate_id!r}")
        candidate = Candidate(
            text=read_text(candidate_record, place), images=read_images(candidate_record, root, place), id=candidate_id
        )
        if candidate.is_empty:
            raise InputError(f"{place}: the candidate has neither text nor images")
        candidates.append(candidate)
        attributes.append(_attributes(candidate_record, place))
    ids = [c.id for c in candidates]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise InputError(f"{where}: candidate id {duplicate!r} appears twice; ids must be unique within a task")
    labelled = "relevance" in record  # unlabelled groups are enough for label-free adaptation
    relevance = record.get("relevance", [0] * len(candidates))
    if not isinstance(relevance, list) or not all(isinstance(r, int) and not isinstance(r, bool) for r in relevance):
        raise InputError(f"{where}: 'relevance' must be a list of integers (0 = irrelevant), got {relevance!r}")
    return RerankTask(
        id=task_id,
        family=str(family),
        query=query,
        candidates=candidates,
        relevance=relevance,
        query_attributes=_attributes(query_record, f"{where}, query"),
        # Attributes are all or nothing: a partial set cannot be lined up with the candidates.
        candidate_attributes=attributes if all(attributes) else [],
        labelled=labelled,
    )


def _attributes(record: Mapping[str, Any], where: str) -> dict[str, str]:
    attributes = record.get("attributes", {})
    if not isinstance(attributes, dict):
        raise InputError(f"{where}: 'attributes' must be an object of strings, got {attributes!r}")
    return {str(k): str(v) for k, v in attributes.items()}
