"""Seeded generator of synthetic multimodal reranking tasks in three image families and one video family.

- ``text_to_image``: a text query ("two red circles on the left") against rendered scenes.
- ``text_to_doc``: a text query (title, header colour, layout) against rendered page or app screenshots.
- ``image_to_text``: a rendered scene as the query against captions.
- ``text_to_video`` (in ``VIDEO_FAMILIES``, not ``FAMILIES``): a text query ("a red circle moving left") against
  clips, each a list of frames of one shape crossing the frame. Its hard negatives start with the query's clip
  turned to the other three directions, which differ from a positive only in the order of where the shape is.

Every candidate is drawn from an attribute combination: positives share the query's combination; hard
negatives differ from it in exactly one attribute; easy negatives in two or more. ``hard_negative_share``
sets the mix, so training can start on easy negatives and move to hard ones (a curriculum).

Split guarantee: each attribute combination belongs to exactly one split, fixed by a hash of the combination
(independent of the seed), and a query is always drawn from its split's combinations. Query texts name every
attribute and query images render them, so no query text or query image can occur in two splits, whatever
seeds the splits were generated with. The two scene families share one partition, so a scene held out for
testing in ``image_to_text`` is also held out in ``text_to_image``. Negatives may use any combination.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

from PIL import Image

from ...engine.inputs import Candidate, ImageSource, Query
from ...errors import InputError
from .render import (
    COLOURS,
    COUNTS,
    DIRECTIONS,
    LAYOUTS,
    POSITIONS,
    SHAPES,
    TITLES,
    render_clip,
    render_document,
    render_scene,
)
from .tasks import FAMILIES, VIDEO_FAMILIES, RerankTask, attribute_distance

__all__ = ["SPLITS", "attribute_space", "caption", "generate", "labelled_images", "query_text", "split_of"]

Split = Literal["train", "validation", "test"]
SPLITS: tuple[Split, ...] = ("train", "validation", "test")

#: Share of attribute combinations per split, in percent of the hash range (70 / 15 / 15).
_SPLIT_BOUNDS: tuple[tuple[Split, int], ...] = (("train", 70), ("validation", 85), ("test", 100))

_SCENE_SPACE: dict[str, tuple[str, ...]] = {
    "colour": tuple(COLOURS),
    "shape": SHAPES,
    "count": COUNTS,
    "position": POSITIONS,
}
_DOC_SPACE: dict[str, tuple[str, ...]] = {"title": TITLES, "header": tuple(COLOURS), "layout": LAYOUTS}
_CLIP_SPACE: dict[str, tuple[str, ...]] = {"colour": tuple(COLOURS), "shape": SHAPES, "direction": DIRECTIONS}
_SPACES = {"scene": _SCENE_SPACE, "document": _DOC_SPACE, "clip": _CLIP_SPACE}
_SPACE_OF_FAMILY = {
    "text_to_image": "scene",
    "image_to_text": "scene",
    "text_to_doc": "document",
    "text_to_video": "clip",
}

_PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
_WHERE = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}
#: Phrasings of a scene description; captions use all of them, so one scene has several positive captions.
_SCENE_TEMPLATES = (
    "{count} {colour} {shapes} {where}",
    "a picture of {count} {colour} {shapes} {where}",
    "{where}, {count} {colour} {shapes}",
)
_DOC_TEMPLATES = (
    "the {title} page with a {header} header and a {layout} layout",
    "a screen titled {title}, {header} header bar, {layout} layout",
    "{layout} document called {title} under a {header} header",
)
_CLIP_TEMPLATES = (
    "a {colour} {shape} moving {direction}",
    "a video of a {colour} {shape} going {direction}",
    "{colour} {shape}, moving {direction}",
)


def attribute_space(family: str) -> dict[str, tuple[str, ...]]:
    """The attributes of a family and the values each can take."""
    return dict(_SPACES[_space_name(family)])


def split_of(family: str, attributes: Mapping[str, str]) -> Split:
    """The split an attribute combination belongs to: a fixed hash, the same for every seed."""
    space = _space_name(family)
    key = space + "|" + "|".join(f"{name}={attributes[name]}" for name in attribute_space(family))
    bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 100
    return next(split for split, bound in _SPLIT_BOUNDS if bucket < bound)


def query_text(family: str, attributes: Mapping[str, str], variant: int = 0) -> str:
    """The text describing a combination, in phrasing ``variant`` (scene, document or clip wording by family)."""
    space = _space_name(family)
    if space == "clip":
        template = _CLIP_TEMPLATES[variant % len(_CLIP_TEMPLATES)]
        return template.format(
            colour=attributes["colour"], shape=attributes["shape"], direction=attributes["direction"]
        )
    if space == "scene":
        template = _SCENE_TEMPLATES[variant % len(_SCENE_TEMPLATES)]
        count = attributes["count"]
        shape = attributes["shape"]
        return template.format(
            count=count,
            colour=attributes["colour"],
            shapes=shape if count == "one" else _PLURAL[shape],
            where=_WHERE[attributes["position"]],
        )
    template = _DOC_TEMPLATES[variant % len(_DOC_TEMPLATES)]
    return template.format(title=attributes["title"], header=attributes["header"], layout=attributes["layout"])


def caption(attributes: Mapping[str, str], variant: int = 0) -> str:
    """A caption of a scene, used as an ``image_to_text`` candidate."""
    return query_text("image_to_text", attributes, variant)


def generate(
    family: str,
    split: Split,
    n_queries: int,
    *,
    seed: int = 0,
    candidates_per_query: int = 20,
    hard_negative_share: float = 0.5,
    max_positives: int = 3,
    image_size: int = 96,
    frames: int = 4,
) -> list[RerankTask]:
    """Generate ``n_queries`` reranking tasks of one family from one split.

    Args:
        family: ``"text_to_image"``, ``"text_to_doc"``, ``"image_to_text"`` or ``"text_to_video"``.
        split: ``"train"``, ``"validation"`` or ``"test"``; splits never share a query (see the module docstring).
        n_queries: number of tasks.
        seed: any integer; equal arguments give identical tasks, pixels included. Task ``i`` depends only on
            (family, split, seed, i, and the options), so ``generate(..., n)[:k] == generate(..., k)``.
        candidates_per_query: candidates per task, positives included (default 20; 20-100 is the usual range).
        hard_negative_share: share of the negatives that differ from the query in exactly one attribute (0-1);
            the rest differ in two or more. Lower it for the first training steps of a model learned from scratch.
            ``image_to_text`` caps hard negatives at its 36 distinct one-attribute captions (12 scenes x 3
            phrasings), so no caption repeats within a task.
        max_positives: each task has between 1 and this many positives (renders or phrasings of the query's
            combination). ``image_to_text`` has at most 3 distinct captions per scene, so it uses at most 3.
        image_size: width in pixels of scenes and clip frames (square) and pages (4/3 as tall), 32-512.
        frames: frames per clip (``text_to_video`` only), an even number from 2 to 64: Qwen3-VL encodes a
            video in groups of 2 frames (``temporal_patch_size``).

    Returns:
        Tasks with candidates in shuffled order; ``candidate_attributes`` and ``query_attributes`` record the
        combinations, and candidate ids are ``"<task id>/<index>"``.
    """
    _space_name(family)
    _check_split(split)
    if n_queries < 0:
        raise InputError(f"n_queries must be >= 0, got {n_queries}")
    if not 1 <= max_positives < candidates_per_query:
        raise InputError(
            f"need 1 <= max_positives < candidates_per_query, got max_positives={max_positives}, "
            f"candidates_per_query={candidates_per_query}"
        )
    if not 0.0 <= hard_negative_share <= 1.0:
        raise InputError(f"hard_negative_share must be within [0, 1], got {hard_negative_share}")
    if not 32 <= image_size <= 512:
        raise InputError(f"image_size must be within [32, 512] pixels, got {image_size}")
    if not (2 <= frames <= 64 and frames % 2 == 0):
        raise InputError(f"frames must be an even number within [2, 64], got {frames}")
    return [
        _task(family, split, seed, index, candidates_per_query, hard_negative_share, max_positives, image_size, frames)
        for index in range(n_queries)
    ]


def labelled_images(
    tasks: Sequence[RerankTask], split: Split | None = None
) -> tuple[list[ImageSource], list[dict[str, str]]]:
    """The candidate images of generated tasks with the attributes each renders (for vision warm starts and
    probes). Text-only candidates are skipped; with ``split``, only combinations of that split are kept, since
    a task's negatives may use any combination (see the module docstring)."""
    if split is not None:
        _check_split(split)
    images: list[ImageSource] = []
    labels: list[dict[str, str]] = []
    for task in tasks:
        for candidate, attributes in zip(task.candidates, task.candidate_attributes):
            if candidate.images and (split is None or split_of(task.family, attributes) == split):
                images.append(candidate.images[0])
                labels.append(dict(attributes))
    return images, labels


# --- internals -------------------------------------------------------------------------------------------


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; expected one of {SPLITS}")


def _space_name(family: str) -> str:
    try:
        return _SPACE_OF_FAMILY[family]
    except KeyError:
        raise InputError(f"unknown task family {family!r}; expected one of {FAMILIES + VIDEO_FAMILIES}") from None


@functools.lru_cache(maxsize=8)
def _combinations(family: str) -> tuple[tuple[tuple[str, str], ...], ...]:
    space = attribute_space(family)
    return tuple(tuple(zip(space, values)) for values in itertools.product(*space.values()))


@functools.lru_cache(maxsize=32)
def _split_pool(family: str, split: Split) -> tuple[tuple[tuple[str, str], ...], ...]:
    pool = tuple(combo for combo in _combinations(family) if split_of(family, dict(combo)) == split)
    assert pool, f"split {split!r} of {family!r} has no attribute combinations; check _SPLIT_BOUNDS"
    return pool


def _task(
    family: str,
    split: Split,
    seed: int,
    index: int,
    n_candidates: int,
    hard_share: float,
    max_positives: int,
    size: int,
    frames: int,
) -> RerankTask:
    task_id = f"{family}/{split}/s{seed}/{index:05d}"
    video = family in VIDEO_FAMILIES
    # A string seed is hashed with SHA-512 by random.Random: stable across runs and platforms. The frame count
    # enters only a clip family's seed, so the image families' tasks do not depend on it.
    rng = random.Random(
        task_id + f"|n{n_candidates}|h{hard_share}|p{max_positives}|px{size}" + (f"|f{frames}" if video else "")
    )
    target = dict(rng.choice(_split_pool(family, split)))
    text_candidates = family == "image_to_text"
    if text_candidates:
        max_positives = min(max_positives, len(_SCENE_TEMPLATES))
    n_positives = rng.randint(1, max_positives)
    n_negatives = n_candidates - n_positives
    n_hard = round(hard_share * n_negatives)

    hard_pool, easy_pool = [], []
    for combo in _combinations(family):
        attributes = dict(combo)
        distance = attribute_distance(attributes, target)
        if distance == 1:
            hard_pool.append(attributes)
        elif distance >= 2:
            easy_pool.append(attributes)

    # (attributes, relevance, phrasing variant); text candidates use distinct (combination, phrasing) pairs.
    drawn: list[tuple[dict[str, str], int, int]] = []
    for variant in rng.sample(range(len(_SCENE_TEMPLATES)), n_positives) if text_candidates else [0] * n_positives:
        drawn.append((target, 1, variant))
    variants = len(_SCENE_TEMPLATES) if text_candidates else 1
    if text_candidates:
        # Captions repeat exactly when drawn twice; past the distinct one-attribute captions, use easy ones.
        n_hard = min(n_hard, len(hard_pool) * variants)
    if video:
        # The query's clip turned to another direction first: only the order of the frames tells it apart.
        turned = [a for a in hard_pool if a["direction"] != target["direction"]]
        n_turned = min(len(turned), n_hard)
        drawn += [(a, 0, 0) for a in rng.sample(turned, n_turned)]
        rest = [a for a in hard_pool if a["direction"] == target["direction"]]
        drawn += [(a, 0, v) for a, v in _draw(rest, n_hard - n_turned, variants, rng)]
    else:
        drawn += [(a, 0, v) for a, v in _draw(hard_pool, n_hard, variants, rng)]
    drawn += [(a, 0, v) for a, v in _draw(easy_pool, n_negatives - n_hard, variants, rng)]
    rng.shuffle(drawn)

    if family == "image_to_text":
        query = Query(images=[render_scene(target, rng, size)])
    else:
        phrasings = {"document": len(_DOC_TEMPLATES), "scene": len(_SCENE_TEMPLATES), "clip": len(_CLIP_TEMPLATES)}
        query = Query(text=query_text(family, target, rng.randrange(phrasings[_space_name(family)])))
    render: Callable[[Mapping[str, str], random.Random, int], Image.Image] = (
        render_document if family == "text_to_doc" else render_scene
    )
    candidates = []
    for position, (attributes, _, variant) in enumerate(drawn):
        candidate_id = f"{task_id}/{position:03d}"
        if text_candidates:
            candidates.append(Candidate(text=caption(attributes, variant), id=candidate_id))
        elif video:
            candidates.append(Candidate(videos=[render_clip(attributes, rng, size, frames)], id=candidate_id))
        else:
            candidates.append(Candidate(images=[render(attributes, rng, size)], id=candidate_id))
    return RerankTask(
        id=task_id,
        family=family,
        query=query,
        candidates=candidates,
        relevance=[relevance for _, relevance, _ in drawn],
        query_attributes=target,
        candidate_attributes=[attributes for attributes, _, _ in drawn],
    )


def _draw(pool: list[dict[str, str]], n: int, variants: int, rng: random.Random) -> list[tuple[dict[str, str], int]]:
    """``n`` (attributes, variant) pairs from ``pool``: without repeats while the pool lasts, then cycling."""
    pairs = [(attributes, variant) for attributes in pool for variant in range(variants)]
    rng.shuffle(pairs)
    return [pairs[i % len(pairs)] for i in range(n)] if pairs else []
