"""Calibration (quality.calibrate, ``minirerank calibrate``) on a tiny model, and the warning when a fast
configuration is served without one."""

from __future__ import annotations

import json
import logging
import math

import pytest

from minirerank_integrations import MiniReranker, RerankConfig
from minirerank_integrations.cli import main
from minirerank_integrations.engine.modeling import CONFIG_FILE
from minirerank_integrations.errors import InputError
from minirerank_integrations.quality.calibrate import (
    Timing,
    calibrate,
    configuration_cost,
    describe,
    grid,
    measure_timing,
)
from minirerank_integrations.quality.data import generate, save_tasks


@pytest.fixture(scope="module")
def validation():
    return generate("text_to_image", "validation", 3, seed=0, candidates_per_query=5, image_size=64) + generate(
        "image_to_text", "validation", 3, seed=0, candidates_per_query=5, image_size=64
    )


def _grid() -> list[RerankConfig]:
    return grid(4, exits=[2, 4], bands=[None, (0, 1)], keeps=[1.0, 0.5])


def test_cost_model():
    timing = Timing(per_pair_s=0.002, per_document_s=0.010)
    assert configuration_cost(timing) == pytest.approx(0.012)
    assert configuration_cost(timing, document_reuse=0.9) == pytest.approx(0.003)
    with pytest.raises(InputError):
        configuration_cost(timing, document_reuse=1.5)


def test_timing_separates_document_work_from_pair_work(tiny4_path, validation):
    model = MiniReranker.from_pretrained(tiny4_path, config="dense")
    vision = MiniReranker(model.backbone, RerankConfig(format="vision_first", exit_layer=2, band=(0, 1)))
    timing, scores = measure_timing(vision, validation)
    assert timing.per_document_s > 0 and timing.per_pair_s > 0
    assert scores[0] == pytest.approx(vision.score([(validation[0].query, c) for c in validation[0].candidates]))
    with pytest.raises(InputError, match="fresh"):
        measure_timing(vision, validation)  # its prefix store is now warm


def test_calibrate_picks_the_cheapest_configuration_meeting_the_target(tiny4_path, validation):
    model = MiniReranker.from_pretrained(tiny4_path, config="dense")
    result = calibrate(model, model, validation, configs=_grid(), target=0.97, progress=False)
    assert result.reference == "labels" and result.families == ["image_to_text", "text_to_image"]
    dense = next(c for c in result.candidates if describe(c.config, 4) == "dense")
    assert dense.meets and dense.min_retention == pytest.approx(1.0)  # the teacher's own computation
    assert result.chosen is not None and result.chosen.meets
    assert all(c.cost >= result.chosen.cost for c in result.candidates if c.meets)
    for c in result.candidates:  # "meets": every family and metric at or above the target, where defined
        values = [v for f in result.families for v in c.retention[f].values()]
        assert any(not math.isnan(v) for v in values)
        assert c.meets == all(math.isnan(v) or v >= 0.97 for v in values)
    assert "CHOSEN" in result.table()


def test_calibrate_says_so_when_no_configuration_meets_the_target(tiny4_path, validation):
    model = MiniReranker.from_pretrained(tiny4_path, config="dense")
    fast = [c for c in _grid() if describe(c, 4) != "dense"]
    # Against the teacher's own ranking no configuration can exceed 1.0, so 1.01 is out of reach.
    result = calibrate(model, model, validation, configs=fast, target=1.01, reference="teacher", progress=False)
    assert result.chosen is None and "no configuration keeps 1.01" in result.answer
    assert all(not c.meets and c.min_retention <= 1.0 for c in result.candidates)


def test_cli_calibrate_writes_the_choice_table_and_frontier(tiny4_path, validation, tmp_path, capsys):
    data = tmp_path / "val"
    save_tasks(validation, data, labels=False)  # no labels: against the teacher's ranking
    out = tmp_path / "calibrated"
    argv = ["calibrate", "--model", str(tiny4_path), "--data", str(data), "--out", str(out)]
    assert main([*argv, "--exits", "2", "4", "--bands", "none", "0:1", "--keeps", "1", "0.5"]) == 0
    printed = capsys.readouterr().out
    assert "answer:" in printed and "CHOSEN" in printed
    document = json.loads((out / "calibration.json").read_text())
    assert document["reference"] == "teacher" and len(document["candidates"]) == len(_grid())
    saved = RerankConfig.model_validate_json((out / CONFIG_FILE).read_text())
    chosen = [c for c in document["candidates"] if c["meets_target"]]
    assert saved.model_dump(mode="json", include=set(chosen[0]["config"])) in [c["config"] for c in chosen]
    assert (out / "calibration.png").read_bytes()[:4] == b"\x89PNG"
    assert main([*argv, "--bands", "9:1"]) == 2  # a bad band: one-line error


def _unvalidated(records) -> list[logging.LogRecord]:
    return [r for r in records if "not validated" in r.getMessage()]


def test_fast_configuration_without_a_saved_one_warns_once(tiny4_path, caplog):
    with caplog.at_level(logging.WARNING):
        reranker = MiniReranker.from_pretrained(tiny4_path)  # no minirerank_config.json: the paper preset
        reranker.rerank("a query", ["one", "two"])
    warned = _unvalidated(caplog.records)
    assert len(warned) == 1
    message = warned[0].getMessage()
    assert "minirerank adapt" in message and "minirerank calibrate" in message
    assert "exit after layer 2 of 4" in message and "pruning" in message and "band" in message
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        MiniReranker.from_pretrained(tiny4_path, config="dense")
        MiniReranker.from_pretrained()  # the demo's adapted variant, with its saved configuration
    assert not _unvalidated(caplog.records)


def test_warning_names_only_what_the_saved_configuration_does_not_cover(tiny4_path, tmp_path, caplog):
    import shutil

    folder = shutil.copytree(tiny4_path, tmp_path / "calibrated")
    saved = RerankConfig(format="query_first", exit_layer=3)  # a partial answer: early exit only
    (folder / CONFIG_FILE).write_text(saved.model_dump_json())
    with caplog.at_level(logging.WARNING):
        MiniReranker.from_pretrained(folder)
    assert not _unvalidated(caplog.records)
    with caplog.at_level(logging.WARNING):
        MiniReranker.from_pretrained(folder, config=saved.model_copy(update={"keep_ratio": 0.5}))
    (warned,) = _unvalidated(caplog.records)
    assert "pruning" in warned.getMessage() and "exit after" not in warned.getMessage()
