"""Configuration: validation against the model's depth and the named presets."""

from __future__ import annotations

import pytest

from minirerank_integrations import Candidate, ConfigError, MiniReranker, Query, RerankConfig


@pytest.mark.parametrize(
    ("depth", "exit_layer", "band"),
    [(28, 16, (8, 16)), (36, 20, (10, 20)), (8, 4, (2, 4)), (4, 2, (1, 2))],
)
def test_paper_preset_scales_with_depth(depth, exit_layer, band):
    """The paper's numbers: exit 16 of 28 (20 of 36), band [8, 16) ending at the exit, keep 0.5."""
    config = RerankConfig.preset("paper", depth)
    assert (config.format, config.exit_layer, config.band, config.keep_ratio) == ("vision_first", exit_layer, band, 0.5)
    assert config.exit_layer <= 0.6 * depth
    assert band[1] == exit_layer and band[1] - band[0] == exit_layer - exit_layer // 2


@pytest.mark.parametrize(("depth", "band"), [(28, (7, 11)), (36, (9, 14)), (8, (2, 3))])
def test_paper_narrow_keeps_the_exit_with_a_narrower_band(depth, band):
    narrow, paper = RerankConfig.preset("paper-narrow", depth), RerankConfig.preset("paper", depth)
    assert (narrow.exit_layer, narrow.band, narrow.keep_ratio) == (paper.exit_layer, band, paper.keep_ratio)
    assert band[1] - band[0] < paper.band[1] - paper.band[0]


def test_dense_preset_is_query_first_everything_on():
    config = RerankConfig.preset("dense", 28)
    assert (config.format, config.exit_layer, config.band, config.keep_ratio) == ("query_first", 28, (0, 28), 1.0)


@pytest.mark.parametrize(
    "config",
    [
        RerankConfig(exit_layer=5),
        RerankConfig(exit_layer=3, band=(1, 4)),
        RerankConfig(band=(2, 9)),
        RerankConfig(format="query_first", band=(1, 2)),
    ],
)
def test_out_of_depth_is_an_error_at_configuration_time(tiny4_path, config):
    with pytest.raises(ConfigError):
        MiniReranker.from_pretrained(tiny4_path, config=config)
    reranker = MiniReranker.from_pretrained(tiny4_path, config="dense")
    with pytest.raises(ConfigError):
        reranker.config = config
    assert reranker.config.format == "query_first"  # the old configuration stays


@pytest.mark.parametrize(
    "kwargs",
    [
        {"band": (3, 1)},
        {"band": (-1, 2)},
        {"exit_layer": 0},
        {"keep_ratio": 0.0},
        {"keep_ratio": 1.5},
        {"min_pixels": 10_000, "max_pixels": 5_000},
        {"pruning_guide": "magic"},
        {"unknown_field": 1},
    ],
)
def test_invalid_fields_are_rejected(kwargs):
    with pytest.raises(ValueError):
        RerankConfig(**kwargs)


def test_unknown_preset_names_the_choices():
    with pytest.raises(ConfigError, match="dense"):
        RerankConfig.preset("fastest", 8)  # type: ignore[arg-type]


def test_instruction_in_prefix_moves_the_instruction_into_the_cached_prefix(tiny4_path):
    default = MiniReranker.from_pretrained(tiny4_path, config="paper")
    cached = MiniReranker(default.backbone, default.config.model_copy(update={"instruction_in_prefix": True}))
    decode = default.backbone.tokenizer.decode
    q, d = default.prepare(Query(text="a red circle"), "q"), default.prepare(Candidate(text="a page"), "d")
    (p0, s0), (p1, s1) = default.segments(q, d), cached.segments(q, d)
    instruction = default.config.instruction
    assert instruction in decode(s0.input_ids) and instruction not in decode(p0.input_ids)
    assert instruction in decode(p1.input_ids) and instruction not in decode(s1.input_ids)
    assert decode(p1.input_ids).endswith("<Document>:a page") and decode(s1.input_ids).startswith("\n<Query>:")
    assert len(s1.input_ids) < len(s0.input_ids)
