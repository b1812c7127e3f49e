"""The synthetic video family: deterministic clips, disjoint splits, frames that move the stated way, and the
image families left exactly as they were."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minirerank_integrations.errors import InputError
from minirerank_integrations.quality.data import (
    FAMILIES,
    SPLITS,
    VIDEO_FAMILIES,
    attribute_space,
    generate,
    load_tasks,
    query_text,
    save_tasks,
    split_of,
)
from minirerank_integrations.quality.data.render import COLOURS, DIRECTIONS, render_clip

FAMILY = "text_to_video"


def _frames(video: object) -> list[Image.Image]:
    assert isinstance(video, tuple | list)
    assert all(isinstance(frame, Image.Image) for frame in video)
    return list(video)


def _pixels(frames: list[Image.Image]) -> list[bytes]:
    return [frame.tobytes() for frame in frames]


def _centroid(frame: Image.Image, colour: str) -> tuple[float, float]:
    """Centre (x, y) of the pixels within a small distance of the clip's colour."""
    pixels = np.asarray(frame, dtype=np.float32)  # [h, w, 3]
    near = np.linalg.norm(pixels - np.array(COLOURS[colour], dtype=np.float32), axis=-1) < 40  # [h, w]
    ys, xs = np.nonzero(near)
    assert len(xs) > 0.05 * near.size, "the shape is missing or tiny"
    return float(xs.mean()), float(ys.mean())


def test_video_family_is_apart_from_the_image_families() -> None:
    assert VIDEO_FAMILIES == ("text_to_video",)
    assert FAMILY not in FAMILIES
    assert attribute_space(FAMILY) == {
        "colour": tuple(COLOURS),
        "shape": ("circle", "square", "triangle", "cross"),
        "direction": ("left", "right", "up", "down"),
    }
    assert query_text(FAMILY, {"colour": "red", "shape": "circle", "direction": "left"}) == "a red circle moving left"


def test_generation_is_deterministic_and_prefix_stable() -> None:
    first = generate(FAMILY, "train", 3, seed=5, candidates_per_query=8, image_size=64)
    again = generate(FAMILY, "train", 3, seed=5, candidates_per_query=8, image_size=64)
    shorter = generate(FAMILY, "train", 2, seed=5, candidates_per_query=8, image_size=64)
    other_seed = generate(FAMILY, "train", 3, seed=6, candidates_per_query=8, image_size=64)
    for a, b in zip(first, again):
        assert a.query == b.query and a.relevance == b.relevance
        assert a.candidate_attributes == b.candidate_attributes
        for ca, cb in zip(a.candidates, b.candidates):
            assert ca.id == cb.id and not ca.images and not ca.text
            assert _pixels(_frames(ca.videos[0])) == _pixels(_frames(cb.videos[0]))
    for a, b in zip(first, shorter):
        assert _pixels(_frames(a.candidates[0].videos[0])) == _pixels(_frames(b.candidates[0].videos[0]))
    assert [_pixels(_frames(c.videos[0])) for c in first[0].candidates] != [
        _pixels(_frames(c.videos[0])) for c in other_seed[0].candidates
    ]


def test_frame_count_and_size() -> None:
    (task,) = generate(FAMILY, "test", 1, seed=0, candidates_per_query=4, image_size=64, frames=6)
    for candidate in task.candidates:
        frames = _frames(candidate.videos[0])
        assert len(frames) == 6 and all(frame.size == (64, 64) and frame.mode == "RGB" for frame in frames)
    for bad in (3, 0, 66):
        with pytest.raises(InputError, match="frames must be an even number"):
            generate(FAMILY, "test", 1, frames=bad)


def test_splits_use_disjoint_combinations_and_queries() -> None:
    seen: dict[str, set[tuple[str, ...]]] = {}
    texts: dict[str, set[str]] = {}
    for split in SPLITS:
        tasks = generate(FAMILY, split, 12, seed=1, candidates_per_query=4, image_size=32)
        seen[split] = {tuple(t.query_attributes.values()) for t in tasks}
        texts[split] = {t.query.text or "" for t in tasks}
        assert all(split_of(FAMILY, t.query_attributes) == split for t in tasks)
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                assert not seen[a] & seen[b] and not texts[a] & texts[b]


def test_relevance_and_hard_negatives_turn_the_direction_first() -> None:
    tasks = generate(FAMILY, "validation", 6, seed=2, candidates_per_query=20, hard_negative_share=0.6)
    for task in tasks:
        target = task.query_attributes
        assert task.query.text == query_text(FAMILY, target, _variant_of(task.query.text, target))
        for attributes, relevance in zip(task.candidate_attributes, task.relevance):
            assert relevance == int(attributes == target)
        assert 1 <= sum(task.relevance) <= 3
        turned = [
            a
            for a in task.candidate_attributes
            if a["direction"] != target["direction"]
            and a["colour"] == target["colour"]
            and a["shape"] == target["shape"]
        ]
        # All three other directions of the query's own colour and shape are among the negatives.
        assert sorted(a["direction"] for a in turned) == sorted(d for d in DIRECTIONS if d != target["direction"])


def _variant_of(text: str | None, target: Mapping[str, str]) -> int:
    return next(v for v in range(3) if query_text(FAMILY, target, v) == text)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_frames_move_in_the_stated_direction(direction: str) -> None:
    for trial in range(5):
        attributes = {"colour": ("red", "blue", "yellow", "purple", "green")[trial], "shape": "circle"}
        attributes["direction"] = direction
        frames = render_clip(attributes, random.Random(f"{direction}{trial}"), size=96, frames=4)
        centres = [_centroid(frame, attributes["colour"]) for frame in frames]
        xs, ys = [c[0] for c in centres], [c[1] for c in centres]
        along, across = (xs, ys) if direction in ("left", "right") else (ys, xs)
        steps = np.diff(along)
        sign = -1 if direction in ("left", "up") else 1  # image y grows downwards
        assert all(sign * step > 8 for step in steps), (direction, along)
        assert max(across) - min(across) < 2, (direction, across)
        assert abs(along[-1] - along[0]) > 0.35 * 96


def test_a_clip_reversed_is_the_opposite_direction() -> None:
    """Same random state, opposite direction: the same frames in the opposite order, so a model that ignores
    the frames' order cannot tell the two apart."""
    base = {"colour": "orange", "shape": "triangle"}
    for there, back in (("left", "right"), ("up", "down")):
        forward = render_clip(base | {"direction": there}, random.Random(7), size=64)
        backward = render_clip(base | {"direction": back}, random.Random(7), size=64)
        assert _pixels(forward) == _pixels(backward)[::-1]
        assert _pixels(forward) != _pixels(backward)


def test_image_families_ignore_the_frame_count() -> None:
    for family in FAMILIES:
        (a,) = generate(family, "test", 1, seed=3, candidates_per_query=4, image_size=32, frames=2)
        (b,) = generate(family, "test", 1, seed=3, candidates_per_query=4, image_size=32, frames=8)
        assert a.query.text == b.query.text and a.candidate_attributes == b.candidate_attributes
        assert [c.text for c in a.candidates] == [c.text for c in b.candidates]


def test_clips_round_trip_through_the_task_files(tmp_path: Path) -> None:
    tasks = generate(FAMILY, "test", 2, seed=4, candidates_per_query=4, image_size=32, frames=2)
    save_tasks(tasks, tmp_path)
    loaded = load_tasks(tmp_path)
    for task, back in zip(tasks, loaded):
        assert back.query.text == task.query.text and back.relevance == task.relevance
        assert back.candidate_attributes == task.candidate_attributes
        for candidate, read in zip(task.candidates, back.candidates):
            (frames,) = read.videos
            assert isinstance(frames, tuple | list) and len(frames) == 2
            assert [Image.open(str(f)).convert("RGB").tobytes() for f in frames] == _pixels(
                _frames(candidate.videos[0])
            )


def test_a_task_file_video_that_is_missing_is_refused(tmp_path: Path) -> None:
    line = {
        "id": "q",
        "query": {"text": "a red circle moving left"},
        "candidates": [{"id": "c", "videos": [["images/gone.png"]]}],
        "relevance": [1],
    }
    (tmp_path / "tasks.jsonl").write_text(json.dumps(line) + "\n")
    with pytest.raises(InputError, match=r"candidate 0, video 0: frame file 'images/gone.png' not found"):
        load_tasks(tmp_path)
    line["candidates"] = [{"id": "c", "videos": [[]]}]
    (tmp_path / "tasks.jsonl").write_text(json.dumps(line) + "\n")
    with pytest.raises(InputError, match="video 0 must be a path string or a non-empty list"):
        load_tasks(tmp_path)
