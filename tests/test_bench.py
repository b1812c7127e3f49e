"""The benchmark runner, smoke-run on the small shape: it runs end to end and its JSON has every field.

No timing is asserted (speed is measured by ``minirerank bench`` runs committed under docs/bench)."""

from __future__ import annotations

import json

from minirerank_integrations.bench.report import targets
from minirerank_integrations.bench.runner import ENGINE_METHODS, ROW_FIELDS
from minirerank_integrations.bench.workload import QUERIES, workload_tokenizer
from minirerank_integrations.cli import main


def test_workload_words_are_single_tokens():
    tokenizer = workload_tokenizer()
    for query in QUERIES:
        assert 8 <= len(tokenizer(" " + query, add_special_tokens=False)["input_ids"]) <= 20


def test_bench_smoke_run_writes_every_field(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["bench", "--shape", "small", "--sizes", "64", "48", "--detail-sizes", "64", "--warm-n", "1", "2"]
    argv += ["--text-candidates", "2"]
    argv += ["--guide-layers", "1", "all", "--full-kv-max-n", "1", "--out", str(out), "--work-dir", str(tmp_path / "w")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "targets:" in printed and "random weights" in printed
    result = json.loads((out / "bench.json").read_text())
    assert {"settings", "shape", "machine", "rows", "ingestion_stages", "profiles", "notes"} <= set(result)
    rows = result["rows"]
    assert all(set(row) == set(ROW_FIELDS) for row in rows)
    methods = {(r["workload"], r["method"], r["state"]) for r in rows}
    for method in ENGINE_METHODS:
        for state in ("ingest", "warm", "cold"):
            assert ("text->image", method, state) in methods
    assert ("text->image", "paper+instruction-in-prefix", "warm") in methods
    for baseline in ("dense-official", "dense-batched"):
        assert ("text->image", baseline, "n/a") in methods and ("image->text", baseline, "n/a") in methods
    assert {("image->text", "paper", "cold"), ("image->text", "paper", "warm")} <= methods
    # a size without detail still has both baselines (the cold-query target reads dense-batched) and paper only
    at_48 = {(r["method"], r["state"]) for r in rows if r["image_size"] == 48}
    assert {("dense-official", "n/a"), ("dense-batched", "n/a"), ("paper", "cold")} <= at_48
    assert not any(m == "+band" for m, _ in at_48)
    for row in rows:
        assert row["seconds_per_pair"] > 0 and row["ratio_to_dense_official"] > 0
    warm = [r for r in rows if r["state"] == "warm" and r["workload"] == "text->image"]
    assert all(r["store_bytes_read_per_pair"] == r["stored_bytes_per_doc"] for r in warm)  # one entry per pair
    paper = next(r for r in rows if (r["method"], r["state"]) == ("paper", "ingest"))
    assert paper["stored_bytes_per_doc"] < paper["full_kv_bytes_per_doc"]
    assert paper["stored_bytes_per_doc_int8"] < paper["stored_bytes_per_doc"]
    assert (
        paper["prefix_tokens"]
        < next(r for r in rows if (r["method"], r["state"]) == ("+band", "ingest"))["prefix_tokens"]
    )  # pruning keeps half of the visual tokens
    stages = result["ingestion_stages"][0]
    assert {"vision_s", "importance_1_layers_s", "importance_all_layers_s", "prefix_pass_s"} <= set(stages)
    assert stages["vision_vs_dense_pair"] > 0 and "floor: the vision encoder alone" in printed
    assert any("warm paper" in name for name in result["profiles"])
    assert all(t["value"] is not None for t in targets(result) if "64x64" in t["target"])
    assert (out / "time_vs_n.png").stat().st_size > 0 and (out / "time_vs_image_tokens.png").stat().st_size > 0
