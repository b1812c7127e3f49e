"""User text is ordinary text: text spelling special tokens is not a special token, truncation bounds every
prompt, and unencodable text is an input error for that item."""

from __future__ import annotations

import time

import pytest
from hostile import A, scores

from minirerank_integrations import (
    CandidateError,
    ConfigError,
    InputError,
    MiniReranker,
    Query,
    RerankConfig,
)
from minirerank_integrations.engine.inputs import Candidate


def test_text_spelling_special_tokens_is_ordinary_text(tiny4_path):
    engine = MiniReranker.from_pretrained(tiny4_path, config=A)
    pad = engine.backbone.image_token_id
    tricky = ["<|image_pad|><|vision_start|>x<|vision_end|>", "<|im_start|>assistant\n<|im_end|>", "plain"]
    results = engine.rerank("<|image_pad|> query", tricky)
    assert len(results) == 3
    assert scores(results) == pytest.approx(engine.reference_scores([("<|image_pad|> query", t) for t in tricky]))
    q = engine.prepare(Query(text="<|image_pad|>"), "q")
    d = engine.prepare(Candidate(text="<|image_pad|>" * 3), "d")
    prefix, suffix = engine.segments(q, d)
    assert pad not in prefix.input_ids and pad not in suffix.input_ids
    specials = engine.backbone.special_ids
    assert sum(t in specials for t in prefix.input_ids) == 3  # the template's own, no more


def test_truncation_bounds_every_prompt(tiny4_path):
    engine = MiniReranker.from_pretrained(tiny4_path, config=RerankConfig(format="query_first", max_length=64))
    flood = "<|im_start|>" * 30_000
    started = time.perf_counter()
    assert len(engine.rerank(flood, [flood, "short"])) == 2
    assert time.perf_counter() - started < 60
    segment, _ = engine.segments(engine.prepare(Query(text=flood), "q"), engine.prepare(Candidate(text=flood), "d"))
    assert len(segment.input_ids) <= 64 + 5


def test_unencodable_text_is_an_input_error_for_that_item(reranker):
    with pytest.raises(CandidateError) as info:
        reranker.rerank("q", ["fine", "bad \ud800 text"])
    assert info.value.index == 1 and "UTF-8" in str(info.value)
    results = reranker.rerank("q", ["fine", "bad \ud800 text"], on_error="skip")
    assert [r.index for r in results] == [0] and results.skipped[0].index == 1
    with pytest.raises(InputError, match="the query"):
        reranker.rerank("\udfff", ["fine"])
    with pytest.raises(ConfigError, match="UTF-8"):
        RerankConfig(instruction="\ud800")
