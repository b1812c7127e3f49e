"""Arguments refused up front with typed errors: a string or mapping is not a candidate list, wrong types are
refused before scoring, invalid configuration values are ConfigError only."""

from __future__ import annotations

import pytest
from hostile import A

from minirerank_integrations import (
    ConfigError,
    InputError,
    MiniReranker,
    Query,
    RerankConfig,
)
from minirerank_integrations.engine.inputs import Candidate
from minirerank_integrations.store import DiskPrefixStore


def test_a_string_or_mapping_is_not_a_candidate_list(reranker):
    for bad in ("abc", b"abc", {"a": "b"}, Candidate(text="x")):
        with pytest.raises(InputError, match="list"):
            reranker.rerank("q", bad)  # type: ignore[arg-type]
        with pytest.raises(InputError, match="list"):
            reranker.score(bad)  # type: ignore[arg-type]
    paper = MiniReranker(reranker.backbone, A)
    with pytest.raises(InputError, match="list"):
        paper.precache("abc")  # type: ignore[arg-type]
    assert paper.counters.prefix_computations == 0


def test_wrong_types_are_refused_before_scoring(reranker):
    with pytest.raises(InputError, match="str"):
        Candidate(text=123)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="str"):
        Query(text=b"x")  # type: ignore[arg-type]
    for top_n in (1.5, True, -1, "2"):
        with pytest.raises(InputError, match="top_n"):
            reranker.rerank("q", ["a"], top_n=top_n)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="pair 0"):
        reranker.score([("q",)])  # type: ignore[list-item]
    with pytest.raises(InputError, match="on_error"):
        MiniReranker(reranker.backbone, A).precache(["a"], on_error="ignore")  # type: ignore[arg-type]
    assert reranker.counters.single_passes == 0


def test_invalid_configuration_values_raise_config_error_only(tiny4_path):
    from pydantic import ValidationError

    for bad in ({"exit_layer": True}, {"band": (True, 2)}, {"batch_size": 0}, {"format": "both"}, {"x": 1}):
        with pytest.raises(ConfigError) as info:
            RerankConfig(**bad)
        assert not isinstance(info.value, ValidationError)
        with pytest.raises(ConfigError):
            RerankConfig.model_validate(bad)
    with pytest.raises(ConfigError, match="cache_size_limit"):
        MiniReranker.from_pretrained(tiny4_path, cache_size_limit=-5)
    with pytest.raises(ConfigError, match="cache_dir"):
        MiniReranker.from_pretrained(tiny4_path, cache_dir="")
    with pytest.raises(ConfigError):
        DiskPrefixStore("")
