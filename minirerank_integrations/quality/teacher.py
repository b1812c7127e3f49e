"""The teacher's scores for adaptation: every candidate of every task scored once by the dense checkpoint,
cached on disk (safetensors, keyed by the teacher's weight digest, its configuration and the tasks' content)
so that epochs and resumed runs never run the teacher again (:func:`teacher_scores`)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..engine.inputs import Candidate, Query
from ..engine.reranker import MiniReranker
from ..errors import CacheError, ScoreError
from .data.tasks import RerankTask

__all__ = ["TEACHER_FILE", "task_digest", "teacher_scores"]

#: Where :func:`~minirerank_integrations.quality.adapt.adapt` caches the teacher's scores in its output folder.
TEACHER_FILE = "teacher_scores.safetensors"


def task_digest(tasks: Sequence[RerankTask]) -> str:
    """A digest of what the teacher sees: every query and candidate (text, image references) in order.

    A local image file is identified by its path, size and modification time, so an image replaced on disk
    changes the digest; other references (URLs, data URIs, in-memory images) by their text or bytes.
    """
    digest = hashlib.blake2b(digest_size=32)

    def image_ref(image: object) -> str:
        if isinstance(image, (str, os.PathLike)) and Path(image).is_file():
            stat = Path(image).stat()
            return f"file:{os.fspath(image)}:{stat.st_size}:{stat.st_mtime_ns}"
        if isinstance(image, bytes):
            return "bytes:" + hashlib.blake2b(image, digest_size=16).hexdigest()
        if hasattr(image, "tobytes"):  # a PIL image
            return "pixels:" + hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest()
        return "ref:" + str(image)

    for task in tasks:
        items: list[Query | Candidate] = [task.query, *task.candidates]
        record = [task.id, [[item.text, [image_ref(im) for im in item.images]] for item in items]]
        digest.update(json.dumps(record, ensure_ascii=False).encode())
    return digest.hexdigest()


@torch.no_grad()
def teacher_scores(
    teacher: MiniReranker,
    tasks: Sequence[RerankTask],
    cache: str | Path | None = None,
    *,
    batch_pairs: int = 32,
    progress: bool = True,
) -> tuple[list[torch.Tensor], bool]:
    """The teacher's logit(yes) - logit(no) for every candidate of every task, and whether they came from
    ``cache``.

    With ``cache`` (a ``.safetensors`` path) the scores are read from it when its key (the teacher's weight
    digest, its configuration and :func:`task_digest`) matches, else computed and written there.

    Raises:
        CacheError: ``cache`` exists but was written for another teacher, configuration or task list, or is
            unreadable (it is left untouched; delete it or choose another path).
        ScoreError: a teacher score is not finite (nothing is cached then).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    key = {
        "teacher": teacher.backbone.fingerprint(),
        "config": teacher.config.model_dump_json(),
        "tasks": task_digest(tasks),
        "count": str(len(tasks)),
    }
    path = Path(cache) if cache is not None else None
    if path is not None and path.exists():
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
            stored = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CacheError(f"{path}: teacher-score cache is unreadable ({exc}); delete it to recompute") from exc
        differs = [k for k in key if metadata.get(k) != key[k]]
        if differs:
            raise CacheError(
                f"{path}: teacher-score cache was written for another {', '.join(differs)}; "
                "delete it or pass another cache path"
            )
        return [stored[f"t{i}"] for i in range(len(tasks))], True

    scores: list[torch.Tensor] = []
    pairs = [(i, j) for i, task in enumerate(tasks) for j in range(len(task.candidates))]
    flat: list[torch.Tensor] = []
    for start in tqdm(range(0, len(pairs), batch_pairs), disable=not progress, desc="teacher", unit="batch"):
        chunk = pairs[start : start + batch_pairs]
        flat.append(teacher.logits([(tasks[i].query, tasks[i].candidates[j]) for i, j in chunk]).float().cpu())
    values = torch.cat(flat) if flat else torch.zeros(0)
    bad = (~torch.isfinite(values)).nonzero()
    if len(bad):  # a NaN target would reach every weight at the first step
        i, j = pairs[int(bad[0])]
        raise ScoreError(
            f"the teacher's score of task {tasks[i].id!r}, candidate {j} is {float(values[int(bad[0])])}: "
            f"{len(bad)} of {len(values)} teacher scores are not finite; load the teacher in float32"
        )
    offset = 0
    for task in tasks:
        scores.append(values[offset : offset + len(task.candidates)].clone())
        offset += len(task.candidates)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        save_file({f"t{i}": s.contiguous() for i, s in enumerate(scores)}, str(partial), metadata=key)
        os.replace(partial, path)  # a crash mid-write leaves no half cache under the real name
    return scores, False
