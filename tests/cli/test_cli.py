"""The ``minirerank demo`` and ``minirerank rerank`` commands."""

from __future__ import annotations

import json

from pictures import drawn_image

from minirerank_integrations import Candidate, MiniReranker
from minirerank_integrations.cli import main
from minirerank_integrations.engine.pdf import pdf_pages
from minirerank_integrations.testing import write_pdf


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


def test_rerank_json_is_one_document(tiny4_path, tmp_path, capsys):
    picture = tmp_path / "picture.png"
    drawn_image(64, 96, seed=3).save(picture)
    argv = ["rerank", "--model", str(tiny4_path), "--query", "a red circle", "--text", "a red thing"]
    status = main([*argv, "--image", str(picture), "--image", str(tmp_path / "absent.png"), "--skip-bad", "--json"])
    assert status == 0
    document = json.loads(capsys.readouterr().out)  # the whole output parses as one JSON value
    engine = MiniReranker.from_pretrained(tiny4_path, config="paper")
    expected = engine.rerank("a red circle", ["a red thing", Candidate(images=[str(picture)])])
    assert [(r["rank"], r["index"], r["score"]) for r in document["results"]] == [
        (rank, r.index, r.score) for rank, r in enumerate(expected, 1)
    ]
    assert document["config"] == engine.config.model_dump(mode="json")
    assert document["candidates"] == 3 and document["query"] == {"text": "a red circle", "images": [], "videos": []}
    assert [s["index"] for s in document["skipped"]] == [2] and "no such file" in document["skipped"][0]["error"]


def test_rerank_without_candidates_is_a_usage_error(capsys):
    assert main(["rerank", "--query", "a red circle"]) == 2
    assert capsys.readouterr().err.strip() == "minirerank: no candidates: pass --text, --image, --pdf or --video"


def test_demo_precaches_then_times_both_paths(capsys):
    assert main(["demo", "--query", "a green circle"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    precached = next(line for line in lines if line.startswith("pre-cached "))
    computed = int(precached.split()[1])
    assert computed == 40  # the pictures and pages of the demo's scene and page tasks
    assert lines.index(precached) < lines.index("query 1/1: 'a green circle'   (40 candidates)")
    timings = [line for line in lines if line.startswith("  fast ") and ", dense " in line]
    assert len(timings) == 1 and all(line.endswith(("x faster", "x slower")) for line in timings)
    # Text queries over pre-cached documents: every document prefix is read, none is computed.
    assert "reused: 40 document prefixes read from the store, 0 computed" in out
    assert "     1  " in out  # a ranked row


def test_rerank_skip_bad_leaves_out_an_unreadable_pdf_with_one_warning(tiny4_path, tmp_path, capsys):
    good = write_pdf(tmp_path / "good.pdf", [drawn_image(64, 96, seed=5)])
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"%PDF-1.7 truncated, no pages")
    argv = ["rerank", "--model", str(tiny4_path), "--query", "a red circle", "--text", "a red thing"]
    argv += ["--pdf", str(bad), "--pdf", str(good), "--json"]
    assert main([*argv, "--skip-bad"]) == 0
    captured = capsys.readouterr()
    warning = [line for line in captured.err.splitlines() if "warning" in line]
    assert (
        len(warning) == 1 and warning[0].startswith("minirerank: warning: skipped the PDF") and "bad.pdf" in warning[0]
    )
    document = json.loads(captured.out)
    engine = MiniReranker.from_pretrained(tiny4_path, config="paper")
    pages = [Candidate(images=[page]) for page in pdf_pages(good)]
    expected = engine.rerank("a red circle", ["a red thing", *pages])
    assert document["candidates"] == 2  # the text and the good PDF's page
    assert [(r["index"], r["score"]) for r in document["results"]] == [(r.index, r.score) for r in expected]
    assert main(argv) == 2  # without --skip-bad the unreadable PDF stops the command, naming it
    assert "bad.pdf" in capsys.readouterr().err
