"""The ``minirerank eval`` command: the printed table, results.json/results.md, and the layer-wise plots."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

from minirerank_integrations import MiniReranker, RerankConfig
from minirerank_integrations.cli import main
from minirerank_integrations.quality.data import FAMILIES, generate, save_tasks
from minirerank_integrations.quality.evaluation import METRICS, OVERALL, evaluate, retention

NO_BAND = '{"format": "vision_first", "band": [0, 0]}'


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread while this file runs: the tiny model's matrices gain nothing from more, and on a
    busy machine worker threads that spin waiting on each other make the same work many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _same(a: float | None, b: float) -> bool:
    """results.json writes an undefined (nan) retention as null."""
    return (a is None and math.isnan(b)) or a == b


def test_eval_prints_the_table_and_writes_the_numbers_evaluate_gives(tiny4_path, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["eval", "--model", str(tiny4_path), "--queries", "1", "--seed", "2", "--out", str(out)]
    status = main([*argv, "--configs", "dense", "paper", f"no-band={NO_BAND}"])
    assert status == 0
    printed = capsys.readouterr().out
    assert all(word in printed for word in ("config", "hit_rate@1", "ndcg@5", "mrr@10", "pairs/s", "retention"))
    for name in ("dense", "paper", "no-band"):
        assert sum(line.split()[0] == name for line in printed.splitlines()[1:]) == len(FAMILIES) + 1

    results = json.loads((out / "results.json").read_text())
    assert [c["name"] for c in results["configs"]] == ["dense", "paper", "no-band"]
    assert results["baseline"] == "dense"
    tasks = [t for family in FAMILIES for t in generate(family, "test", 1, seed=2, candidates_per_query=20)]
    reranker = MiniReranker.from_pretrained(tiny4_path, config="dense")
    dense = evaluate(reranker, tasks)
    assert results["tasks"]["digest"] == dense.task_digest
    configs = ["dense", "paper", RerankConfig.model_validate_json(NO_BAND)]
    for written, config in zip(results["configs"], configs):
        reranker.config = config
        report = evaluate(reranker, tasks)
        assert written["config"] == reranker.config.model_dump(mode="json")
        assert written["metrics"] == report.metrics
        assert written["pairs"] == report.pairs == {**{f: 20 for f in FAMILIES}, OVERALL: 60}
        assert set(written["seconds"]) == {*FAMILIES, OVERALL} and written["seconds"][OVERALL] > 0
        assert written["pairs_per_second"] > 0
        expected_retention = retention(report, dense)
        for group, values in written["retention"].items():
            assert all(_same(values[m], expected_retention[group][m]) for m in METRICS)
    assert results["configs"][2]["config"]["band"] == [0, 0]

    markdown = (out / "results.md").read_text()
    assert "| config | family |" in markdown and "| no-band | overall |" in markdown
    assert not (out / "exit_curve.png").exists()


def test_eval_layerwise_on_task_directories(tiny4_path, tmp_path, capsys):
    data = tmp_path / "tasks"
    save_tasks(
        [t for family in ("text_to_image", "image_to_text") for t in generate(family, "test", 2, seed=5)],
        data,
    )
    out = tmp_path / "out"
    argv = ["eval", "--model", str(tiny4_path), "--data", str(data), "--family", "text_to_image", "image_to_text"]
    status = main([*argv, "--queries", "1", "--configs", "dense", "--out", str(out), "--layerwise"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "exit curve of dense" in printed and "attention share" in printed

    results = json.loads((out / "results.json").read_text())
    assert results["tasks"]["queries"] == {"text_to_image": 1, "image_to_text": 1, OVERALL: 2}
    layerwise = results["layerwise"]
    assert layerwise["config"] == "dense"
    assert sorted(layerwise["exit_curve"], key=int) == ["1", "2", "3", "4"]
    assert results["configs"][0]["metrics"] == layerwise["exit_curve"]["4"]  # the dense config exits at 4
    assert len(layerwise["attention_share"]) == 4
    assert all(0.0 <= share <= 1.0 for share in layerwise["attention_share"])
    for name in ("exit_curve.png", "attention_share.png"):
        with Image.open(out / name) as image:
            image.verify()
            assert image.format == "PNG"
        assert f"]({name})" in (out / "results.md").read_text()


def test_eval_rejects_a_bad_config_with_status_2(tiny4_path, capsys):
    assert main(["eval", "--model", str(tiny4_path), "--configs", "fast"]) == 2
    assert "--configs 'fast'" in capsys.readouterr().err
    assert main(["eval", "--model", str(tiny4_path), "--queries", "1", "--configs", 'x={"exit_layer": 9}']) == 2
    assert "exit_layer 9" in capsys.readouterr().err
