"""The ``minirerank demo`` and ``minirerank rerank`` commands."""

from __future__ import annotations

import json

from pictures import drawn_image

from minirerank_integrations import Candidate, MiniReranker
from minirerank_integrations.cli import main


def test_rerank_prints_the_engines_ranking_as_json_lines(tiny4_path, tmp_path, capsys):
    picture = tmp_path / "picture.png"
    drawn_image(64, 96, seed=3).save(picture)
    status = main(
        [
            "rerank",
            "--model",
            str(tiny4_path),
            "--query",
            "a red circle",
            "--text",
            "a red thing",
            "--text",
            "a report",
            "--image",
            str(picture),
            "--top-n",
            "2",
        ]
    )
    assert status == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    engine = MiniReranker.from_pretrained(tiny4_path, config="paper")
    expected = engine.rerank("a red circle", ["a red thing", "a report", Candidate(images=[str(picture)])], top_n=2)
    assert [r["index"] for r in rows] == [r.index for r in expected]
    assert [r["score"] for r in rows] == [r.score for r in expected]


def test_rerank_reports_bad_input_with_status_2(tiny4_path, capsys):
    assert main(["rerank", "--model", str(tiny4_path), "--query", "", "--text", "a"]) == 2
    assert "neither text nor images" in capsys.readouterr().err


def test_demo_runs_offline(capsys):
    assert main(["demo", "--query", "a green circle"]) == 0
    out = capsys.readouterr().out
    assert "query: 'a green circle'" in out
    assert "per-pair passes" in out
