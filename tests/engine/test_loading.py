"""Loading: the prefix store's settings as one StoreConfig (the flat cache_* keywords are its shorthands), the
stored precision following the model's dtype, and wrong argument types as ConfigError before the model loads."""

from __future__ import annotations

import math

import pytest

from minirerank_integrations import ConfigError, MiniReranker, RerankConfig, StoreConfig


def test_store_settings_as_one_store_config(tiny4_path, tmp_path):
    engine = MiniReranker.from_pretrained(
        tiny4_path, config="paper", store=StoreConfig(dir=str(tmp_path), storage="int8")
    )
    assert engine.store.back.storage == "int8"  # the directory tier behind the memory tier
    assert engine.loaded_as["store"] == {"dir": str(tmp_path), "storage": "int8"}
    engine.score([("a query", "a document")])
    assert engine.store.back.stats.writes == 1


def test_shorthands_change_the_store_they_are_given_with(tiny4_path, tmp_path):
    engine = MiniReranker.from_pretrained(
        tiny4_path, config="paper", store={"dir": str(tmp_path), "storage": "int8"}, cache_storage="bfloat16"
    )
    assert engine.store.back.storage == "bfloat16"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_stored_precision_follows_the_model_dtype_by_default(tiny4_path, tmp_path, dtype):
    engine = MiniReranker.from_pretrained(tiny4_path, config="paper", dtype=dtype, cache_dir=tmp_path)
    assert engine.store.back.storage == dtype
    assert engine.loaded_as["dtype"] == dtype


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"cache_dir": 123}, "cache_dir"),
        ({"cache_memory_limit": "abc"}, "cache_memory_limit"),
        ({"cache_ttl": math.inf, "cache_url": "redis://127.0.0.1:1/0"}, "cache_ttl"),
        ({"store": ["not", "settings"]}, "StoreConfig"),
        ({"embedder": 123}, "embedder"),
        ({"config": {"format": "vision_first"}}, "RerankConfig"),
        ({"config": RerankConfig(format="vision_first", keep_ratio=0.5, pruning_guide_layers=9)}, "embedder's 4"),
    ],
)
def test_wrong_arguments_are_config_errors_naming_them(tiny4_path, options, named):
    with pytest.raises(ConfigError, match=named):
        MiniReranker.from_pretrained(tiny4_path, **options)
