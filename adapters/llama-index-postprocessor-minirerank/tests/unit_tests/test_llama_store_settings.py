"""The prefix store as one setting: ``store`` (a StoreConfig or a dict) reaches the engine as given, int8
included, survives to_dict/from_dict, and a bad value is a ConfigError naming it before any model loads."""

import math
from pathlib import Path

import pytest
from llama_index.core.schema import NodeWithScore, QueryBundle
from minirerank_integrations import ConfigError, StoreConfig

from llama_index.postprocessor.minirerank import MiniRerank, MiniRerankPrecache


def test_an_int8_directory_store_is_filled_by_precache_and_read_by_the_postprocessor(
    tiny_path: Path, mixed_nodes, tmp_path: Path
) -> None:
    store = StoreConfig(dir=tmp_path / "prefixes", storage="int8", memory_limit=0)
    ingest = MiniRerankPrecache(model=str(tiny_path), config="paper", store=store, device="cpu")
    assert ingest.engine.store.storage == "int8" and ingest.engine.store.directory == str(tmp_path / "prefixes")
    ingest(mixed_nodes)

    rerank = MiniRerank(model=str(tiny_path), config="paper", store=store.model_dump(), device="cpu", top_n=None)
    rerank.postprocess_nodes([NodeWithScore(node=n) for n in mixed_nodes], QueryBundle("a red circle"))
    assert rerank.engine.counters.prefix_hits == len(mixed_nodes)
    assert rerank.engine.counters.prefix_computations == 0

    data = rerank.to_dict()
    assert data["store"]["storage"] == "int8" and data["cache_dir"] == str(tmp_path / "prefixes")
    restored = MiniRerank.from_dict(data)
    assert restored.store == rerank.store and restored.engine.store.storage == "int8"


def test_the_shorthands_fold_into_store(tiny_path: Path, tmp_path: Path) -> None:
    rerank = MiniRerank(model=str(tiny_path), cache_dir=tmp_path / "a", store={"storage": "float16"}, device="cpu")
    assert rerank.store == StoreConfig(dir=str(tmp_path / "a"), storage="float16")
    assert rerank.engine.store.back.storage == "float16"
    with pytest.raises(ConfigError, match="exclusive"):
        MiniRerank(model=str(tiny_path), cache_url="redis://127.0.0.1:6379/0", store={"dir": str(tmp_path)})


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"cache_dir": 123}, "cache_dir"),
        ({"store": {"memory_limit": "abc"}}, "memory_limit"),
        ({"store": {"url": "redis://127.0.0.1:6379/0", "ttl": math.inf}}, "ttl"),
        ({"cache_url": "redis://127.0.0.1:99999/0"}, "cache_url"),
        ({"store": {"storage": "int4"}}, "storage"),
        ({"store": "redis://127.0.0.1:6379/0"}, "StoreConfig or a dict"),
    ],
)
def test_bad_store_settings_are_config_errors_before_the_model_loads(
    tmp_path: Path, settings: dict, named: str
) -> None:
    missing = str(tmp_path / "no-checkpoint")  # never read: the store is checked first
    for component in (MiniRerank, MiniRerankPrecache):
        with pytest.raises(ConfigError, match=named):
            component(model=missing, device="cpu", **settings)


def test_store_is_refused_with_a_shared_engine(engine) -> None:
    with pytest.raises(ValueError, match="store applies only when the model is loaded by name"):
        MiniRerank(model=engine, store={"storage": "int8"})
    assert MiniRerank(model=engine).to_dict()["store"] is None
