"""Linear probes of vision features, on the shipped demo model's dense variant and generated scenes."""

from __future__ import annotations

import random

import pytest
import torch

from minirerank_integrations import InputError, MiniReranker
from minirerank_integrations.demo_model import demo_checkpoint
from minirerank_integrations.quality.data import generate
from minirerank_integrations.quality.vision_probe import vision_probe


@pytest.fixture(scope="module")
def dense():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield MiniReranker.from_pretrained(demo_checkpoint("dense"), config="dense")
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def scenes():
    tasks = generate("text_to_image", "validation", 12, seed=7)
    images = [c.images[0] for t in tasks for c in t.candidates]
    labels = [a for t in tasks for a in t.candidate_attributes]
    return images, labels


def test_trained_features_tell_colours_apart_and_shuffled_labels_do_not(dense, scenes):
    images, labels = scenes
    accuracy = vision_probe(dense, images, labels)
    assert set(accuracy) == {"colour", "shape", "count", "position"}
    assert accuracy["colour"] >= 0.9, accuracy  # six colours: chance is about 0.17
    shuffled = labels[:]
    random.Random(0).shuffle(shuffled)  # the same images and values, no longer matched
    assert vision_probe(dense, images, shuffled)["colour"] <= 0.5


def test_the_probe_is_deterministic_for_a_seed(dense, scenes):
    images, labels = scenes
    assert vision_probe(dense, images[:120], labels[:120], seed=3) == vision_probe(
        dense, images[:120], labels[:120], seed=3
    )


def test_bad_labels_raise_input_errors_that_name_the_item(dense, scenes):
    images, labels = scenes
    with pytest.raises(InputError, match="3 images but 2 labels"):
        vision_probe(dense, images[:3], labels[:2])
    odd = [*labels[:5], {"colour": "red"}]
    with pytest.raises(InputError, match="label 5 names"):
        vision_probe(dense, images[:6], odd)
    same = [{"colour": "red", "shape": lab["shape"]} for lab in labels[:20]]
    with pytest.raises(InputError, match="'colour' takes one value"):
        vision_probe(dense, images[:20], same)
    with pytest.raises(InputError, match="need 2 each"):
        vision_probe(dense, images[:4], labels[:4])
