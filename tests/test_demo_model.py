"""The embedded demo model: shipped as package data, loaded through ``from_pretrained``, and it ranks."""

from __future__ import annotations

import shutil

import pytest

from minirerank_integrations import ConfigError, MiniReranker, RerankConfig
from minirerank_integrations.demo_model import DEMO_MODEL, demo_checkpoint
from minirerank_integrations.engine.modeling import CONFIG_FILE
from minirerank_integrations.quality.data import FAMILIES, generate
from minirerank_integrations.quality.evaluation import evaluate


@pytest.fixture(scope="module")
def tasks():
    # Seed and size differ from docs/results.md, so this is a fresh sample of the test split.
    return [t for f in FAMILIES for t in generate(f, "test", 8, seed=123, hard_negative_share=0.6)]


def _chance(tasks) -> float:
    return sum(len(t.positives) / len(t.candidates) for t in tasks) / len(tasks)


def test_package_data_is_complete_and_small():
    total = 0
    for variant in ("dense", "paper"):
        folder = demo_checkpoint(variant)
        names = {p.name for p in folder.iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"} <= names, names
        total += sum(p.stat().st_size for p in folder.iterdir())
    assert total < 30 * 2**20, total
    with pytest.raises(ValueError, match="unknown demo variant"):
        demo_checkpoint("large")  # type: ignore[arg-type]


def test_default_model_is_the_adapted_demo_guided_by_the_dense_one():
    fast = MiniReranker.from_pretrained()
    dense = MiniReranker.from_pretrained(DEMO_MODEL, config="dense")
    by_path = MiniReranker.from_pretrained(demo_checkpoint("paper"), embedder=demo_checkpoint("dense"))
    saved = RerankConfig.model_validate_json((demo_checkpoint("paper") / CONFIG_FILE).read_text())
    assert fast.config == by_path.config == saved.resolve(8)  # the configuration it was adapted to
    assert fast.config.format == "vision_first" and fast.config.keep_ratio < 1.0
    assert fast.config.exit_layer <= 0.6 * fast.num_layers
    assert fast.config.band[1] - fast.config.band[0] <= fast.num_layers / 3
    assert MiniReranker.from_pretrained(config="paper").config == RerankConfig.preset("paper", 8)
    assert fast.backbone.fingerprint() == by_path.backbone.fingerprint()
    assert fast.embedder.fingerprint() == dense.backbone.fingerprint() != fast.backbone.fingerprint()
    assert dense.config.format == "query_first"


def test_a_checkpoint_may_carry_its_configuration(tiny4_path, tmp_path):
    folder = tmp_path / "adapted"
    shutil.copytree(tiny4_path, folder)
    (folder / CONFIG_FILE).write_text('{"format": "vision_first", "exit_layer": 3, "band": [0, 1]}')
    reranker = MiniReranker.from_pretrained(folder)
    assert (reranker.config.exit_layer, reranker.config.band) == (3, (0, 1))
    assert MiniReranker.from_pretrained(folder, config="dense").config.format == "query_first"
    assert MiniReranker.from_pretrained(tiny4_path).config == RerankConfig.preset("paper", 4)  # no file: paper
    (folder / CONFIG_FILE).write_text('{"exit_layer": "import os"}')
    with pytest.raises(ConfigError, match=CONFIG_FILE):
        MiniReranker.from_pretrained(folder)


@pytest.mark.parametrize("config", ["dense", None], ids=["dense", "adapted"])
def test_demo_model_ranks_generated_queries_far_better_than_chance(tasks, config):
    reranker = MiniReranker.from_pretrained(config=config)
    report = evaluate(reranker, tasks)
    chance = _chance(tasks)
    assert report.metrics["overall"]["hit_rate@1"] >= 3 * chance, (report.metrics, chance)
    for family in FAMILIES:
        per_family = [t for t in tasks if t.family == family]
        assert report.metrics[family]["mrr@10"] > 2 * _chance(per_family), (family, report.metrics[family])
