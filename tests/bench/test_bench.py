"""The benchmark runner, smoke-run on the small shape: it runs end to end and its JSON has every field.

No timing is asserted (speed is measured by ``minirerank bench`` runs committed under docs/bench)."""

from __future__ import annotations

import json
import re

import pytest

from minirerank_integrations import MiniReranker, RerankConfig
from minirerank_integrations.bench import prefix_bytes
from minirerank_integrations.bench.report import targets
from minirerank_integrations.bench.runner import ENGINE_METHODS, ROW_FIELDS
from minirerank_integrations.bench.shapes import SHAPES
from minirerank_integrations.bench.workload import QUERIES, workload_tokenizer
from minirerank_integrations.cli import main
from minirerank_integrations.store.codec import encode_entry


def test_workload_words_are_single_tokens():
    tokenizer = workload_tokenizer()
    for query in QUERIES:
        assert 8 <= len(tokenizer(" " + query, add_special_tokens=False)["input_ids"]) <= 20


def test_bench_smoke_run_writes_every_field(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["bench", "--shape", "small", "--sizes", "64", "48", "--detail-sizes", "64", "--warm-n", "1", "2"]
    argv += ["--text-candidates", "2", "--vocabulary", "workload"]
    argv += ["--guide-layers", "1", "all", "--full-kv-max-n", "1", "--out", str(out), "--work-dir", str(tmp_path / "w")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "targets:" in printed and "random weights" in printed
    result = json.loads((out / "bench.json").read_text())
    assert {"settings", "shape", "machine", "rows", "ingestion_stages", "profiles", "notes"} <= set(result)
    assert result["vocabulary"] == "workload"
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


def _measured_lines(printed: str) -> dict[tuple[str, str], int]:
    found = re.findall(r"^  (.+?)\s+(float32|int8)\s+([\d,]+) bytes", printed, flags=re.MULTILINE)
    return {(name, storage): int(size.replace(",", "")) for name, storage, size in found}


def test_prefix_bytes_prints_the_codec_size_of_each_stored_entry(tiny8_path, capsys):
    prefix_bytes.main(["--width", "64", "--height", "96", "--text-tokens", "8"])
    printed = capsys.readouterr().out
    measured = _measured_lines(printed)
    assert set(measured) == {(name, s) for name in prefix_bytes.MEASURED_CONFIGS for s in ("float32", "int8")}
    doc = prefix_bytes.measured_page(64, 96)
    shape = SHAPES["tiny"]
    layers = {}
    for name, config in prefix_bytes.MEASURED_CONFIGS.items():
        reranker = MiniReranker.from_pretrained(tiny8_path, config=config)
        reranker.precache([doc], progress=False)
        key, _ = reranker.document_prefix(reranker.prepare(doc, "a page"))
        entry = reranker.store.get(key)
        assert entry is not None
        stored_layers, kv_heads, tokens, head_dim = entry.keys.shape
        assert (kv_heads, head_dim) == (shape.kv_heads, shape.head_dim)  # the tiny shape is the checkpoint's
        layers[name] = stored_layers
        for storage in ("float32", "int8"):
            size = measured[(name, storage)]
            assert size == len(encode_entry(entry, key=prefix_bytes.MEASURE_KEY, storage=storage))
        raw = prefix_bytes.prefix_bytes(shape, stored_layers, tokens, "float32")
        assert raw < measured[(name, "float32")] < raw + 4096  # keys and values plus a small header
        assert measured[(name, "int8")] < measured[(name, "float32")] / 3
    paper = RerankConfig.preset("paper", shape.layers)
    assert layers == {"full depth, all tokens": shape.layers, "paper": paper.band[1] - paper.band[0]}
    assert measured[("paper", "float32")] < measured[("full depth, all tokens", "float32")]


def test_prefix_bytes_estimates_follow_the_shapes():
    rows = prefix_bytes.estimate_rows(1024, 1344, 64)
    assert {r["model"] for r in rows} == set(prefix_bytes.ESTIMATED.values())
    two_b = {r["config"]: r for r in rows if r["model"] == "Qwen3-VL-Reranker-2B"}
    full, paper, int8 = two_b.values()
    visual = prefix_bytes.visual_tokens(1024, 1344)[2]
    assert full["tokens"] == prefix_bytes.SYSTEM_TOKENS + visual + 64 and full["layers"] == 28
    assert full["bytes"] == 2 * 28 * 8 * 128 * full["tokens"] * 2  # keys and values, bfloat16
    assert (paper["layers"], paper["tokens"]) == (8, prefix_bytes.SYSTEM_TOKENS + visual // 2 + 64)
    assert paper["bytes"] == 2 * 8 * 8 * 128 * paper["tokens"] * 2 and int8["bytes"] * 2 == paper["bytes"]
    assert paper["ratio"] == pytest.approx(paper["bytes"] / full["bytes"]) and 0 < int8["ratio"] < paper["ratio"] < 1
