"""The embedded demo model: shipped as package data, loaded through ``from_pretrained``, and it ranks."""

from __future__ import annotations

import pytest

from minirerank_integrations import MiniReranker
from minirerank_integrations.data import FAMILIES, generate
from minirerank_integrations.demo_model import DEMO_MODEL, demo_checkpoint
from minirerank_integrations.evaluation import evaluate


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
    assert fast.config.format == "vision_first" and fast.config.keep_ratio < 1.0
    assert fast.backbone.fingerprint() == by_path.backbone.fingerprint()
    assert fast.embedder.fingerprint() == dense.backbone.fingerprint() != fast.backbone.fingerprint()
    assert dense.config.format == "query_first"


@pytest.mark.parametrize("config", ["dense", "paper"])
def test_demo_model_ranks_generated_queries_far_better_than_chance(tasks, config):
    reranker = MiniReranker.from_pretrained(config=config)
    report = evaluate(reranker, tasks)
    chance = _chance(tasks)
    assert report.metrics["overall"]["hit_rate@1"] >= 3 * chance, (report.metrics, chance)
    for family in FAMILIES:
        per_family = [t for t in tasks if t.family == family]
        assert report.metrics[family]["mrr@10"] > 2 * _chance(per_family), (family, report.metrics[family])
