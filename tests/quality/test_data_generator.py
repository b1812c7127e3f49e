"""Synthetic task generator: determinism, split disjointness, negatives by attribute distance, rendering, JSONL."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from minirerank_integrations import Candidate, InputError, Query
from minirerank_integrations.engine.images import image_digest, load_image
from minirerank_integrations.quality import data as data_module
from minirerank_integrations.quality.data import (
    FAMILIES,
    SPLITS,
    RerankTask,
    attribute_distance,
    attribute_space,
    caption,
    generate,
    labelled_images,
    load_tasks,
    query_text,
    save_tasks,
    split_of,
)
from minirerank_integrations.quality.data.render import COLOURS, render_document, render_scene

SMALL = {"candidates_per_query": 20, "image_size": 64}


def _fingerprint(task: RerankTask) -> tuple:
    """Everything in a task, images as pixel digests."""

    def images(item: Query | Candidate) -> tuple[str, ...]:
        return tuple(image_digest(load_image(image)) for image in item.images)

    return (
        task.id,
        task.family,
        task.query.text,
        images(task.query),
        tuple((c.id, c.text, images(c)) for c in task.candidates),
        tuple(task.relevance),
        tuple(sorted(task.query_attributes.items())),
        tuple(tuple(sorted(a.items())) for a in task.candidate_attributes),
    )


def _all_combinations(family: str) -> list[dict[str, str]]:
    combos: list[dict[str, str]] = [{}]
    for name, values in attribute_space(family).items():
        combos = [{**combo, name: value} for combo in combos for value in values]
    return combos


def test_public_surface() -> None:
    assert sorted(data_module.__all__) == sorted(
        [
            "FAMILIES",
            "SPLITS",
            "VIDEO_FAMILIES",
            "RerankTask",
            "attribute_distance",
            "attribute_space",
            "caption",
            "generate",
            "labelled_images",
            "load_documents",
            "load_retrieved",
            "load_tasks",
            "query_text",
            "save_tasks",
            "split_of",
        ]
    )
    assert FAMILIES == ("text_to_image", "text_to_doc", "image_to_text")


@pytest.mark.parametrize("family", FAMILIES)
def test_same_arguments_give_identical_tasks_pixels_included(family: str) -> None:
    first = [_fingerprint(t) for t in generate(family, "train", 2, seed=7, **SMALL)]
    second = [_fingerprint(t) for t in generate(family, "train", 2, seed=7, **SMALL)]
    assert first == second
    # Task i does not depend on how many tasks were asked for.
    assert [_fingerprint(t) for t in generate(family, "train", 1, seed=7, **SMALL)] == first[:1]


@pytest.mark.parametrize("family", FAMILIES)
def test_different_seed_gives_different_tasks(family: str) -> None:
    a = [_fingerprint(t)[2:] for t in generate(family, "train", 2, seed=0, **SMALL)]
    b = [_fingerprint(t)[2:] for t in generate(family, "train", 2, seed=1, **SMALL)]
    assert a != b


@pytest.mark.parametrize("family", FAMILIES)
def test_every_split_owns_its_combinations_and_query_texts(family: str) -> None:
    combos = _all_combinations(family)
    by_split = {split: [c for c in combos if split_of(family, c) == split] for split in SPLITS}
    assert all(by_split[split] for split in SPLITS), {s: len(v) for s, v in by_split.items()}
    texts = {split: {query_text(family, c, v) for c in by_split[split] for v in range(3)} for split in SPLITS}
    assert not texts["train"] & texts["validation"]
    assert not texts["train"] & texts["test"]
    assert not texts["validation"] & texts["test"]


@pytest.mark.parametrize("family", FAMILIES)
def test_generated_splits_never_share_a_query(family: str) -> None:
    seen: dict[str, str] = {}
    for split, seed in zip(SPLITS, (0, 1, 0)):  # the guarantee holds whatever the seeds
        for task in generate(family, split, 25, seed=seed, candidates_per_query=2, max_positives=1, image_size=32):
            assert split_of(family, task.query_attributes) == split
            keys = [task.query.text] if task.query.text else [image_digest(load_image(i)) for i in task.query.images]
            for key in keys:
                assert seen.setdefault(key, split) == split, f"{key!r} in {seen[key]} and {split}"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("n_candidates", [20, 100])
def test_candidate_counts_positives_and_negatives_by_attribute_distance(family: str, n_candidates: int) -> None:
    for task in generate(family, "validation", 2, seed=3, candidates_per_query=n_candidates, image_size=32):
        assert len(task.candidates) == len(task.relevance) == len(task.candidate_attributes) == n_candidates
        assert set(task.relevance) <= {0, 1}
        assert 1 <= sum(task.relevance) <= 3
        assert len({c.id for c in task.candidates}) == n_candidates
        distances = [attribute_distance(a, task.query_attributes) for a in task.candidate_attributes]
        for distance, relevance in zip(distances, task.relevance):
            assert (distance == 0) == (relevance == 1)
        n_negatives = n_candidates - sum(task.relevance)
        expected_hard = round(0.5 * n_negatives)
        if family == "image_to_text":
            expected_hard = min(expected_hard, 12 * 3)  # distinct captions: 12 one-attribute scenes x 3 phrasings
        assert distances.count(1) == expected_hard
        assert min(d for d in distances if d > 0) == 1


def test_hard_negative_share_sets_the_curriculum() -> None:
    (easy,) = generate("text_to_image", "train", 1, hard_negative_share=0.0, image_size=32)
    (hard,) = generate("text_to_image", "train", 1, hard_negative_share=1.0, image_size=32)
    easy_distances = [attribute_distance(a, easy.query_attributes) for a in easy.candidate_attributes]
    hard_distances = [attribute_distance(a, hard.query_attributes) for a in hard.candidate_attributes]
    assert all(d == 0 or d >= 2 for d in easy_distances)
    assert all(d <= 1 for d in hard_distances)


def test_labelled_images_pair_each_candidate_image_with_its_attributes_and_filter_by_split() -> None:
    tasks = generate("text_to_doc", "train", 3, **SMALL) + generate("image_to_text", "train", 2, **SMALL)
    images, labels = labelled_images(tasks)
    pages = [(c.images[0], a) for t in tasks[:3] for c, a in zip(t.candidates, t.candidate_attributes)]
    assert len(images) == len(labels) == len(pages)  # image_to_text candidates are captions: skipped
    assert all(i is page and a == label for (page, label), i, a in zip(pages, images, labels))
    kept_images, kept = labelled_images(tasks, split="train")
    assert kept and len(kept_images) == len(kept) and all(split_of("text_to_doc", a) == "train" for a in kept)
    assert len(kept) == sum(split_of("text_to_doc", a) == "train" for a in labels) < len(labels)
    with pytest.raises(InputError, match="unknown split 'dev'"):
        labelled_images(tasks, split="dev")


def test_image_to_text_captions_match_attributes_and_do_not_repeat() -> None:
    (task,) = generate("image_to_text", "test", 1, candidates_per_query=100, max_positives=3, image_size=32)
    assert task.query.text is None and len(task.query.images) == 1
    texts = [c.text for c in task.candidates]
    assert len(set(texts)) == len(texts)
    for candidate, attributes in zip(task.candidates, task.candidate_attributes):
        assert candidate.text in {caption(attributes, v) for v in range(3)}


def test_queries_name_every_attribute() -> None:
    (t2i,) = generate("text_to_image", "train", 1, image_size=32)
    (t2d,) = generate("text_to_doc", "train", 1, image_size=32)
    for task in (t2i, t2d):
        for value in task.query_attributes.values():
            assert value in task.query.text
    assert query_text("text_to_image", {"colour": "red", "shape": "circle", "count": "two", "position": "left"}) == (
        "two red circles on the left"
    )


@pytest.mark.parametrize("position", ["left", "right", "top", "bottom"])
@pytest.mark.parametrize("count", ["one", "two"])
def test_scene_draws_large_shapes_of_the_colour_in_the_named_half(position: str, count: str) -> None:
    import random

    attributes = {"colour": "blue", "shape": "square", "count": count, "position": position}
    image = render_scene(attributes, random.Random(0), 96)
    pixels = np.asarray(image, dtype=np.int32)  # [96, 96, 3]
    mask = np.abs(pixels - np.array(COLOURS["blue"])).max(axis=-1) <= 14  # [96, 96]
    ys, xs = np.nonzero(mask)
    assert mask.mean() >= (0.19 if count == "one" else 0.33)  # one shape >= 19 %, two shapes >= 33 % together
    inside = {"left": xs < 48, "right": xs >= 48, "top": ys < 48, "bottom": ys >= 48}[position]
    assert inside.all()


def test_all_families_render_at_the_requested_size() -> None:
    import random

    scene = render_scene({"colour": "red", "shape": "cross", "count": "two", "position": "top"}, random.Random(1), 64)
    page = render_document({"title": "Harbor", "header": "green", "layout": "grid"}, random.Random(1), 96)
    assert scene.size == (64, 64) and scene.mode == "RGB"
    assert page.size == (96, 128) and page.mode == "RGB"
    # The header bar carries the header colour.
    header_pixel = np.asarray(page)[3, 1].astype(int)
    assert np.abs(header_pixel - np.array(COLOURS["green"])).max() <= 12
    for family in FAMILIES:
        (task,) = generate(family, "test", 1, image_size=64)
        images = [*task.query.images, *(i for c in task.candidates for i in c.images)]
        assert images and all(isinstance(i, Image.Image) for i in images)


def test_invalid_arguments_raise_input_error() -> None:
    with pytest.raises(InputError, match="unknown task family 'audio'"):
        generate("audio", "train", 1)
    with pytest.raises(InputError, match="unknown split 'dev'"):
        generate("text_to_image", "dev", 1)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="hard_negative_share"):
        generate("text_to_image", "train", 1, hard_negative_share=1.5)
    with pytest.raises(InputError, match="max_positives"):
        generate("text_to_image", "train", 1, candidates_per_query=3, max_positives=3)
    with pytest.raises(InputError, match="one label per candidate"):
        RerankTask(id="x", family="f", query=Query(text="q"), candidates=[Candidate(text="a")], relevance=[1, 0])


def test_save_and_load_round_trip(tmp_path) -> None:
    tasks = [generate(family, "test", 1, seed=2, image_size=48)[0] for family in FAMILIES]
    jsonl = save_tasks(tasks, tmp_path / "set")
    assert jsonl == tmp_path / "set" / "tasks.jsonl"
    assert all(p.suffix == ".png" for p in (tmp_path / "set" / "images").iterdir())
    loaded = load_tasks(tmp_path / "set")
    assert [_fingerprint(t) for t in loaded] == [_fingerprint(t) for t in tasks]
    for task in loaded:
        assert all(isinstance(i, str) for c in task.candidates for i in c.images)
    with pytest.raises(FileExistsError):
        save_tasks(tasks, tmp_path / "set")
    save_tasks(tasks[:1], tmp_path / "set", overwrite=True)
    assert len(load_tasks(jsonl)) == 1


def test_load_accepts_minimal_hand_written_lines_and_names_bad_ones(tmp_path) -> None:
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "red.png")
    minimal = {
        "id": "q1",
        "query": {"text": "something red"},
        "candidates": [{"images": ["red.png"]}, {"text": "a blue thing"}],
        "relevance": [1, 0],
    }
    (tmp_path / "tasks.jsonl").write_text(json.dumps(minimal) + "\n\n")
    (task,) = load_tasks(tmp_path)
    assert task.family == "custom"
    assert [c.id for c in task.candidates] == ["q1/0", "q1/1"]
    assert task.candidates[0].images == (str((tmp_path / "red.png").resolve()),)
    assert task.candidate_attributes == [] and task.query_attributes == {}

    unlabelled = dict(minimal, id="q2")
    del unlabelled["relevance"]  # labels are optional: an adaptation group needs none
    (tmp_path / "tasks.jsonl").write_text(json.dumps(minimal) + "\n" + json.dumps(unlabelled) + "\n")
    first, second = load_tasks(tmp_path)
    assert first.labelled and first.relevance == [1, 0]
    assert not second.labelled and second.relevance == [0, 0]
    broken = dict(minimal, id="q3", relevance=[1])
    (tmp_path / "tasks.jsonl").write_text(json.dumps(minimal) + "\n" + json.dumps(broken) + "\n")
    with pytest.raises(InputError, match=r"'q3': 1 relevance labels for 2 candidates"):
        load_tasks(tmp_path)
    broken = dict(minimal, id="q4")
    del broken["candidates"]
    (tmp_path / "tasks.jsonl").write_text(json.dumps(broken) + "\n")
    with pytest.raises(InputError, match=r"line 1: missing required key 'candidates'"):
        load_tasks(tmp_path)
    missing = dict(minimal, candidates=[{"images": ["nowhere.png"]}], relevance=[1])
    (tmp_path / "tasks.jsonl").write_text(json.dumps(missing) + "\n")
    with pytest.raises(InputError, match=r"line 1, candidate 0: image file 'nowhere.png' not found"):
        load_tasks(tmp_path)
    with pytest.raises(InputError, match="no such file"):
        load_tasks(tmp_path / "absent")
