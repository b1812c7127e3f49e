"""Prompts as Qwen's own tokenizer splits them: the real vocabulary built offline from the published ranks, the
engine's segments checked against the official prompt and the official truncation rule, and a tiny checkpoint
whose embedding table has the real vocabulary's rows."""

from __future__ import annotations

import pytest
from pictures import drawn_image
from stock_reference import official_prompt, stock_score

from minirerank_integrations import Candidate, MiniReranker, Query, RerankConfig
from minirerank_integrations.engine.images import smart_resize
from minirerank_integrations.qwen_vocab import QWEN3_VL_SPECIAL_TOKENS, QWEN3_VL_VOCAB_SIZE, qwen_tokenizer
from minirerank_integrations.tiny_checkpoint import build_tiny_checkpoint


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return qwen_tokenizer(cache_dir=tmp_path_factory.mktemp("qwen-vocab"))


@pytest.fixture(scope="module")
def qwen_tiny(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("tiny-qwen-vocab")
    return build_tiny_checkpoint(path, num_layers=4, tokenizer=tokenizer, vocab_size=QWEN3_VL_VOCAB_SIZE)


def test_special_tokens_sit_at_the_published_ids(tokenizer):
    for token, expected in QWEN3_VL_SPECIAL_TOKENS.items():
        assert tokenizer.convert_tokens_to_ids(token) == expected, token
        assert tokenizer(token, add_special_tokens=False)["input_ids"] == [expected]
    assert len(tokenizer.tokenize("yes")) == len(tokenizer.tokenize("no")) == 1
    # Qwen's split: digits one at a time, a leading space joined to the word after it.
    assert tokenizer.tokenize("in 2024") == ["in", "Ġ", "2", "0", "2", "4"]


def official_truncation(ids: list[int], max_length: int, special_ids: set[int]) -> list[int]:
    """The official reranker's rule, written from its description: the last five prompt tokens stay; of the
    rest, every special token stays and the first ``max_length - specials`` ordinary tokens."""
    head, tail = ids[:-5], ids[-5:]
    if len(head) <= max_length:
        return ids
    budget = max_length - sum(t in special_ids for t in head)
    kept, ordinary = [], 0
    for t in head:
        if t in special_ids:
            kept.append(t)
        elif ordinary < budget:
            kept.append(t)
            ordinary += 1
    return kept + tail


@pytest.mark.parametrize(
    ("query", "document"),
    [
        (Query(text="quarterly revenue, 2024"), Candidate(text="Revenue rose 12% in Q3: see table 4.")),
        (Query(text="a red circle"), Candidate(text="a caption", images=[drawn_image(96, 64, 5)])),
        (Query(images=[drawn_image(64, 64, 6)]), Candidate(text="Paris is the capital of France.")),
    ],
)
def test_the_engine_tokenizes_the_official_prompt(qwen_tiny, tokenizer, query, document):
    engine = MiniReranker.from_pretrained(qwen_tiny, config="dense")
    q, d = engine.prepare(query, "q"), engine.prepare(document, "d")
    segment, _ = engine.segments(q, d)
    resized = [im.image for im in (*q.images, *d.images)]
    prompt = official_prompt(query.text, resized[: len(q.images)], document.text, resized[len(q.images) :])
    assert list(segment.input_ids) == tokenizer(prompt, add_special_tokens=False)["input_ids"]
    score = engine.score([(query, document)])[0]
    assert score == pytest.approx(stock_score(engine.backbone, list(segment.input_ids), resized), abs=1e-5)


def test_truncation_at_max_length_follows_the_official_rule(qwen_tiny, tokenizer):
    config = RerankConfig(format="query_first", max_length=48)
    engine = MiniReranker.from_pretrained(qwen_tiny, config=config)
    long_text = "The quarterly report lists revenue by region and by product line. " * 20
    page = drawn_image(64, 96, 7)
    q = engine.prepare(Query(text="revenue by region"), "q")
    d = engine.prepare(Candidate(text=long_text, images=[page]), "d")
    segment, _ = engine.segments(q, d)
    height, width = smart_resize(96, 64)
    assert d.images[0].image.size == (width, height)
    full = tokenizer(official_prompt(q.text, [], long_text, [d.images[0].image]), add_special_tokens=False)
    expected = official_truncation(full["input_ids"], 48, set(tokenizer.all_special_ids))
    assert len(full["input_ids"]) > len(expected)  # the rule really cut
    assert list(segment.input_ids) == expected


def test_vision_first_suffix_length_with_the_real_vocabulary(qwen_tiny, tokenizer):
    """The per-pair work is the suffix: with Qwen's vocabulary a short text query makes a suffix of a few
    dozen tokens (the figure the 2B-shape bench multiplies)."""
    engine = MiniReranker.from_pretrained(qwen_tiny, config="paper")
    q = engine.prepare(Query(text="a chart of quarterly revenue"), "q")
    d = engine.prepare(Candidate(images=[drawn_image(64, 64, 8)]), "d")
    prefix, suffix = engine.segments(q, d)
    decoded = tokenizer.decode(list(prefix.input_ids) + list(suffix.input_ids))
    assert decoded.endswith("<Query>:a chart of quarterly revenue<|im_end|>\n<|im_start|>assistant\n")
    assert 20 <= len(suffix.input_ids) <= 40


def test_a_video_pair_tokenizes_as_the_official_processor_does(qwen_tiny, tmp_path):
    """With Qwen's vocabulary, a video pair's ids (timestamps as ordinary text next to the labels and the text
    around them, one vision block per temporal group, videos before images before text) equal what the official
    prompt, qwen-vl-utils and transformers' processor give (tests/video_reference); the score agrees too."""
    from video_clips import clip_frames, write_clip
    from video_reference.oracle import OfficialRun

    clip = str(write_clip(tmp_path / "clip.mov", clip_frames(8, seed=1)))
    frames = []
    for index, frame in enumerate(clip_frames(3, seed=2)):
        frame.save(tmp_path / f"f{index}.png")
        frames.append(str(tmp_path / f"f{index}.png"))
    page = tmp_path / "page.png"
    drawn_image(64, 96, 5).save(page)
    query = Query(text="which clip, 2024?", videos=[frames])
    document = Candidate(text="Revenue rose 12% in Q3.", images=[str(page)], videos=[clip])
    run = OfficialRun(
        qwen_tiny,
        [
            {
                "query": {"text": "which clip, 2024?", "videos": [frames]},
                "document": {"text": "Revenue rose 12% in Q3.", "images": [str(page)], "videos": [clip]},
            }
        ],
        max_frames=64,
        workdir=tmp_path,
    )
    engine = MiniReranker.from_pretrained(qwen_tiny, config="dense")
    segment, _ = engine.segments(engine.prepare(query, "q"), engine.prepare(document, "d"))
    score = engine.score([(query, document)])
    official = run.result()
    assert list(segment.input_ids) == official["input_ids"][0]
    assert "<0.2 seconds>" in engine.backbone.tokenizer.decode(list(segment.input_ids))  # a frame list's first group
    assert score == pytest.approx(official["scores"], abs=1e-5)
