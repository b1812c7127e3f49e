"""Settings as data: to_dict/to_json like other LlamaIndex components, configuration passed to the engine."""

import json

import pytest
from llama_index.core.schema import MetadataMode
from minirerank_integrations import MiniReranker, RerankConfig

from llama_index.postprocessor.minirerank import MiniRerank, MiniRerankPrecache


def _json_values(data) -> list:
    if isinstance(data, dict):
        return [v for value in data.values() for v in _json_values(value)]
    if isinstance(data, (list, tuple)):
        return [v for value in data for v in _json_values(value)]
    return [data]


def test_to_dict_holds_settings_only(tiny_path) -> None:
    rerank = MiniRerank(
        model=str(tiny_path),
        top_n=3,
        config="paper",
        batch_size=4,
        device="cpu",
        keep_retrieval_score=True,
        metadata_mode=MetadataMode.NONE,
        on_error="skip",
        image_fetcher=lambda url: b"",
    )

    data = rerank.to_dict()

    assert data["class_name"] == "MiniRerank"
    assert data["model"] == str(tiny_path)
    assert (data["top_n"], data["config"], data["batch_size"], data["device"]) == (3, "paper", 4, "cpu")
    assert (data["keep_retrieval_score"], data["on_error"]) == (True, "skip")
    assert "image_fetcher" not in data and "callback_manager" not in data
    assert all(isinstance(v, (str, int, float, bool, type(None))) for v in _json_values(data))
    assert json.loads(rerank.to_json()) == json.loads(json.dumps(data))


def test_from_json_loads_the_same_reranker(tiny_path, image_nodes, ranked) -> None:
    rerank = MiniRerank(model=str(tiny_path), top_n=2, batch_size=3)

    again = MiniRerank.from_json(rerank.to_json())

    assert again.engine is not rerank.engine
    assert again.engine.config == rerank.engine.config
    assert again.engine.config.batch_size == 3
    assert ranked(again.postprocess_nodes(image_nodes, query_str="red")) == ranked(
        rerank.postprocess_nodes(image_nodes, query_str="red")
    )


def test_shared_engine_is_recorded_not_serialized(engine, tiny_path) -> None:
    data = MiniRerank(model=engine).to_dict()

    assert data["model"] == str(tiny_path)
    assert RerankConfig.model_validate(data["config"]) == engine.config
    assert (data["device"], data["dtype"]) == ("cpu", "float32")
    json.dumps(data)
    assert MiniRerank.from_dict(data).engine.config == engine.config


def test_precache_to_dict(engine) -> None:
    data = MiniRerankPrecache(MiniRerank(model=engine, metadata_mode=MetadataMode.NONE)).to_dict()

    assert data["class_name"] == "MiniRerankPrecache"
    assert data["metadata_mode"] == MetadataMode.NONE
    assert "image_fetcher" not in data
    json.dumps(data)


@pytest.mark.parametrize(
    ("config", "batch_size", "expected"),
    [
        ("dense", None, {"format": "query_first", "batch_size": 16}),
        (RerankConfig(format="vision_first", keep_ratio=1.0), 2, {"keep_ratio": 1.0, "batch_size": 2}),
        (None, 5, {"format": "vision_first", "keep_ratio": 0.5, "batch_size": 5}),
    ],
)
def test_config_reaches_the_engine(tiny_path, config, batch_size, expected) -> None:
    rerank = MiniRerank(model=tiny_path, config=config, batch_size=batch_size)

    assert {key: getattr(rerank.engine.config, key) for key in expected} == expected


@pytest.mark.parametrize(
    "settings",
    [{"config": "dense"}, {"batch_size": 3}, {"device": "meta"}, {"dtype": "bfloat16"}, {"cache_dir": "some/cache"}],
)
def test_a_shared_engine_is_not_reconfigured(engine, settings) -> None:
    before = engine.config

    with pytest.raises(ValueError, match=next(iter(settings))):
        MiniRerank(model=engine, **settings)

    assert engine.config == before


def test_matching_settings_on_a_shared_engine_are_accepted(engine: MiniReranker) -> None:
    rerank = MiniRerank(
        model=engine, config="paper", batch_size=engine.config.batch_size, device="cpu", dtype="float32"
    )
    assert rerank.engine is engine
