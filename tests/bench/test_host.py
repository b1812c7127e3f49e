"""The host-pipeline and ingestion benchmarks run end to end on small inputs and report what they claim to
(the timings themselves are the benchmarks' business, never asserted here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from minirerank_integrations.bench import host, ingest


@pytest.mark.parametrize("storage", ["bfloat16", "int8"])
def test_host_bench_measures_every_row(tmp_path: Path, storage: str) -> None:
    row = host.measure(64, storage, str(tmp_path), repeats=2)  # a 64x64 page: 48 tokens, under 1 MB
    assert row["prefix_tokens"] == host.prefix_tokens(64) == 48
    names = {"memcpy", "xxh3", "file", "decode", "disk_get", "memory_tier_get", "memcpy_out", "gather", "put_in_place"}
    assert names <= set(row["ms"]) and all(value > 0 for value in row["ms"].values())
    assert ("dequant_before" in row["ms"]) is (storage == "int8")
    assert row["get_and_gather_over_memcpy"] > row["disk_get_over_memcpy"] > 0
    text = host.render({"repeats": 2, "machine": {"cpus": 2, "load_average": None}, "rows": [row]})
    assert "window gather" in text and f"   64 {storage:>8} |" in text


def test_ingest_bench_runs_both_modes() -> None:
    result = ingest.run_ingest_bench(documents=2, repeats=1, page_size=64, storage="bfloat16")
    assert set(result["seconds"]) == {"in_place", "write_behind"}
    assert all(len(times) == 1 and times[0] > 0 for times in result["seconds"].values())
    assert result["entry_bytes"] > 0 and result["store_share_ms_per_document"] > 0
    assert "write behind" in ingest.render(result)


def test_report_writes_the_json_and_the_text_beside_it(tmp_path: Path, capsys) -> None:
    from minirerank_integrations.bench.outputs import report

    result = {"rows": [{"size": 512, "ratio": 2.5}]}
    report(result, "512 2.50x", tmp_path / "host_cpu.json")
    assert capsys.readouterr().out == "512 2.50x\n"
    assert json.loads((tmp_path / "host_cpu.json").read_text()) == result
    assert (tmp_path / "host_cpu.txt").read_text() == "512 2.50x\n"
    report(result, "no file", None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["host_cpu.json", "host_cpu.txt"]
