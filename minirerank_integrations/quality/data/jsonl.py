"""Reranking tasks on disk: a directory with ``tasks.jsonl`` (one query per line) and PNG files under ``images/``.

The format is described for users in ``docs/data-format.md``. One line::

    {"id": "q1", "family": "text_to_image",
     "query": {"text": "two red circles on the left", "images": []},
     "candidates": [{"id": "q1/000", "text": null, "images": ["images/000000_c000_0.png"]}, ...],
     "relevance": [1, 0, ...]}

A side with videos also has ``"videos"``: each video a list of frame paths (a clip given as frames, written as
PNGs) or one path or URI of a video file (a file given by path is copied under ``videos/``, bytes are written
there).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ...engine.images import load_image
from ...engine.inputs import Candidate, ImageSource, Query, VideoSource
from ...errors import InputError
from .tasks import RerankTask

__all__ = ["TASKS_FILE", "load_tasks", "read_images", "read_object", "read_text", "save_tasks"]

TASKS_FILE = "tasks.jsonl"
IMAGES_DIR = "images"
VIDEOS_DIR = "videos"
#: Image references kept as they are on load instead of being resolved against the directory.
_PASS_THROUGH_PREFIXES = ("http://", "https://", "data:", "file://")


def save_tasks(
    tasks: Iterable[RerankTask], directory: str | os.PathLike, *, overwrite: bool = False, labels: bool = True
) -> Path:
    """Write tasks as ``directory/tasks.jsonl`` plus ``directory/images/*.png``; returns the JSONL path.

    Every image (PIL image, path, bytes, base64...) is decoded and written as an RGB PNG, named by the task's
    position in ``tasks``: ``images/<task>_q<k>.png`` for query images, ``images/<task>_c<candidate>_<k>.png``
    for candidate images. A video given as frames is written as one PNG per frame
    (``images/<task>_c<candidate>_v<k>_f<frame>.png``); a video file given by path or bytes is copied to
    ``videos/`` as it is; a URL is kept as written. Paths in the file are relative to ``directory``.

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
        if task.query.videos:
            query["videos"] = [
                _write_video(root, f"{t:06d}_q_v{k}", video) for k, video in enumerate(task.query.videos)
            ]
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
            if candidate.videos:
                record["videos"] = [
                    _write_video(root, f"{t:06d}_c{j:03d}_v{k}", video) for k, video in enumerate(candidate.videos)
                ]
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


def read_videos(record: Mapping[str, Any], root: Path, where: str) -> list[str | list[str]]:
    """A record's ``videos``: each a path string or URI of a video file, or a list of frame path strings; paths
    are read from ``root`` (each must exist), URIs kept as written."""
    videos = record.get("videos", [])
    if not isinstance(videos, list):
        raise InputError(f"{where}: 'videos' must be a list of videos, got {videos!r}")
    resolved: list[str | list[str]] = []
    for k, video in enumerate(videos):
        if isinstance(video, str):
            resolved.append(_resolve(video, root, f"{where}, video {k}", "video file"))
        elif isinstance(video, list) and video and all(isinstance(frame, str) for frame in video):
            resolved.append([_resolve(frame, root, f"{where}, video {k}", "frame file") for frame in video])
        else:
            raise InputError(
                f"{where}: video {k} must be a path string or a non-empty list of frame path strings, got {video!r}"
            )
    return resolved


def read_images(record: Mapping[str, Any], root: Path, where: str) -> list[str]:
    """A record's ``images``: path strings read from ``root`` (each must exist) or URIs kept as written."""
    images = record.get("images", [])
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise InputError(f"{where}: 'images' must be a list of path strings, got {images!r}")
    return [_resolve(image, root, where, "image file") for image in images]


# --- internals -------------------------------------------------------------------------------------------


def _resolve(reference: str, root: Path, where: str, what: str) -> str:
    """A URI as written, or a path relative to ``root`` made absolute (the file must exist)."""
    if reference.startswith(_PASS_THROUGH_PREFIXES):
        return reference
    path = (root / reference) if not os.path.isabs(reference) else Path(reference)
    if not path.is_file():
        raise InputError(f"{where}: {what} {reference!r} not found (looked at {path})")
    return str(path.resolve())


def _write_video(root: Path, stem: str, source: VideoSource) -> str | list[str]:
    if isinstance(source, (list, tuple)):
        return [_write_image(root, f"{stem}_f{i}", frame) for i, frame in enumerate(source)]
    if isinstance(source, str) and source.startswith(("http://", "https://", "data:")):
        return source
    (root / VIDEOS_DIR).mkdir(exist_ok=True)
    if isinstance(source, bytes):
        relative = f"{VIDEOS_DIR}/{stem}.bin"
        (root / relative).write_bytes(source)
        return relative
    path = Path(str(source).removeprefix("file://"))
    if not path.is_file():
        raise InputError(f"video file {str(source)!r} not found; cannot save it")
    relative = f"{VIDEOS_DIR}/{stem}{path.suffix}"
    shutil.copyfile(path, root / relative)
    return relative


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
        text=read_text(query_record, f"{where}, query"),
        images=read_images(query_record, root, f"{where}, query"),
        videos=read_videos(query_record, root, f"{where}, query"),
    )
    if query.is_empty:
        raise InputError(f"{where}: the query has neither text, images nor videos")
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
            text=read_text(candidate_record, place),
            images=read_images(candidate_record, root, place),
            id=candidate_id,
            videos=read_videos(candidate_record, root, place),
        )
        if candidate.is_empty:
            raise InputError(f"{place}: the candidate has neither text, images nor videos")
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
