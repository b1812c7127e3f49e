"""The load benchmark runs end to end on a tiny bounded workload: both servers answer every request, the report
has each row, the in-process reference and the ratios, and the batch sizes come from the server's /metrics.
(Speed is what the benchmark measures, not what this test checks.)"""

from __future__ import annotations

import json

from minirerank_integrations.bench import serve_load


def test_serve_load_runs_and_reports(tmp_path) -> None:
    out = tmp_path / "bench"
    argv = ["--users", "1", "2", "--requests", "4", "--cold-requests", "2", "--repeats", "1", "--pool", "6"]
    argv += ["--docs", "2", "3", "--image-size", "64", "--out", str(out)]
    assert serve_load.main(argv) == 0
    result = json.loads((out / "serve_load.json").read_text())
    rows = result["server"]
    assert {(r["batching"], r["temperature"], r["users"]) for r in rows} == {
        (b, t, u) for b in (True, False) for t in ("warm", "cold") for u in (1, 2)
    }
    assert all(r["requests"] == (4 if r["temperature"] == "warm" else 2) for r in rows)
    assert all(r["batches"] >= 1 and r["server_cpu_ms_per_request"] > 0 for r in rows)
    assert all(r["mean_batch_requests"] == 1.0 for r in rows if not r["batching"])
    assert {r["rerank_many_group"] for r in result["in_process"]} == {1, 2}
    report = (out / "results.md").read_text()
    assert "batching on / off" in report and "CPU per request" in report and "in-process" in report
    assert "minirerank_batch_size_count" in (out / "metrics.txt").read_text()
