"""The invariants of ``docs/design.md`` ("Invariants the tests prove"), on tiny offline checkpoints in float32."""

from __future__ import annotations

import pytest
from stock_reference import INSTRUCTION, SYSTEM, official_prompt, side, stock_score

from minirerank_integrations import Candidate, MiniReranker, Query, RerankConfig


def pair_kinds(images):
    """Text-to-image, image-to-text, image-to-image and text-to-text pairs, images of three sizes."""
    a, b, c = images
    return [
        (Query(text="a red circle on the left"), Candidate(images=[a])),
        (Query(text="two blue squares"), Candidate(text="a page title", images=[c])),
        (Query(images=[b]), Candidate(text="a blue square")),
        (Query(text="which one?", images=[c]), Candidate(text="seven objects")),
        (Query(images=[a]), Candidate(images=[b, c])),
        (Query(text="capital of France"), Candidate(text="Paris is the capital of France.")),
    ]


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_dense_query_first_equals_stock_forward(model_path, images):
    reranker = MiniReranker.from_pretrained(model_path, config="dense")
    pairs = pair_kinds(images)
    scores = reranker.score(pairs)
    for (q, d), score in zip(pairs, scores):
        prompt = official_prompt(q.text, q.images, d.text, d.images)
        expected = stock_score(reranker.backbone, _ids(reranker.backbone.tokenizer, prompt), [*q.images, *d.images])
        assert abs(score - expected) <= 1e-5, (q, d, score, expected)
    assert len(set(round(s, 6) for s in scores)) > 1, "the tiny model should not give every pair one score"


def _vision_first_ids(tokenizer, q, d, prefix_side):
    """The vision-first prompt, written out: prefix and suffix tokenized separately."""
    head = f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n"
    tail = "<|im_end|>\n<|im_start|>assistant\n"
    if prefix_side == "document":
        prefix = head + "<Document>:" + side(d.text, d.images)
        suffix = f"\n<Instruct>: {INSTRUCTION}<Query>:" + side(q.text, q.images) + tail
        images = [*d.images, *q.images]
    else:
        prefix = head + "<Query>:" + side(q.text, q.images)
        suffix = f"\n<Instruct>: {INSTRUCTION}\n<Document>:" + side(d.text, d.images) + tail
        images = [*q.images, *d.images]
    return _ids(tokenizer, prefix) + _ids(tokenizer, suffix), images


def test_vision_first_full_band_equals_stock_forward(model_path, images):
    reranker = MiniReranker.from_pretrained(model_path, config=RerankConfig(format="vision_first"))
    pairs = pair_kinds(images)
    scores = reranker.score(pairs)
    for (q, d), score in zip(pairs, scores):
        prefix_side = "query" if q.images and not d.images else "document"
        ids, pair_images = _vision_first_ids(reranker.backbone.tokenizer, q, d, prefix_side)
        expected = stock_score(reranker.backbone, ids, pair_images)
        assert abs(score - expected) <= 1e-5, (q, d, score, expected)


def _configs(depth: int) -> list[RerankConfig]:
    mid = depth // 2
    return [
        RerankConfig.preset("paper", depth),
        RerankConfig(format="vision_first", exit_layer=mid + 1, band=(1, mid), keep_ratio=0.5),
        RerankConfig(format="vision_first", exit_layer=depth, band=(0, 2), keep_ratio=0.25, pruning_guide="random"),
        RerankConfig(format="vision_first", exit_layer=mid, band=(mid, mid)),  # empty band
        RerankConfig(format="vision_first", prefix_side="query", exit_layer=depth - 1, band=(1, depth - 1)),
        RerankConfig(format="vision_first", exit_layer=1, band=(0, 1), keep_ratio=0.6),
        RerankConfig(format="query_first", exit_layer=mid, keep_ratio=0.5),
        RerankConfig(
            format="vision_first", exit_layer=depth - 1, band=(1, mid), keep_ratio=0.5, instruction_in_prefix=True
        ),
        RerankConfig.preset("paper-narrow", depth, pruning_guide_layers=None),
    ]


@pytest.mark.parametrize("config_index", range(9))
def test_fast_path_equals_naive_reference(model_path, images, config_index):
    reranker = MiniReranker.from_pretrained(model_path, config="dense")
    reranker.config = _configs(reranker.num_layers)[config_index]
    pairs = pair_kinds(images)
    fast = reranker.score(pairs)
    naive = reranker.reference_scores(pairs)
    for f, n, pair in zip(fast, naive, pairs):
        assert abs(f - n) <= 1e-4, (reranker.config, pair, f, n)


def test_scores_independent_of_batch_size_order_and_cache(tiny8_path, images):
    config = RerankConfig.preset("paper", 8)
    pairs = pair_kinds(images)
    one = MiniReranker.from_pretrained(tiny8_path, config=config.model_copy(update={"batch_size": 1}))
    many = MiniReranker.from_pretrained(tiny8_path, config=config.model_copy(update={"batch_size": 16}))
    by_one = one.score(pairs)
    by_many = many.score(pairs)
    reversed_scores = many.score(pairs[::-1])[::-1]
    assert many.counters.prefix_hits >= len(pairs) - 1  # the second call read its prefixes from the store
    cached = many.score(pairs)
    for a, b, c, d in zip(by_one, by_many, reversed_scores, cached):
        assert abs(a - b) <= 1e-6
        assert abs(b - c) <= 1e-6
        assert abs(b - d) <= 1e-6
    # One query against many candidates in one call equals scoring each pair alone.
    query = Query(text="a red circle on the left")
    candidates = [Candidate(images=[im]) for im in images] + [Candidate(text="Paris")]
    ranked = many.rerank(query, candidates)
    alone = {i: many.score([(query, c)])[0] for i, c in enumerate(candidates)}
    for result in ranked:
        assert abs(result.score - alone[result.index]) <= 1e-6
