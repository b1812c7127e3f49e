"""``minirerank rerank --video`` and ``--query-video``: the engine's ranking of the same video files; without PyAV
(the ``video`` extra) one line on stderr naming the extra, before any model loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from minirerank_integrations import Candidate, MiniReranker, Query
from minirerank_integrations.cli import main
from minirerank_integrations.testing import moving_shape_frames, write_video

# The console script beside this interpreter when installed (make installs it into .venv/bin), else the module.
_SCRIPT = Path(sys.executable).with_name("minirerank")
ENTRY = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "minirerank_integrations.cli"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("clips")
    return {c: str(write_video(folder / f"{c}.mp4", moving_shape_frames(c))) for c in ("red", "blue", "green")}


def test_each_video_is_a_candidate(tiny4_path, clips, capsys) -> None:
    argv = ["rerank", "--model", str(tiny4_path), "--query", "a red circle moving right", "--text", "a red thing"]
    status = main([*argv, "--video", clips["red"], "--video", clips["blue"]])
    assert status == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    engine = MiniReranker.from_pretrained(tiny4_path, config="paper")
    expected = engine.rerank(
        "a red circle moving right",
        [Candidate(text="a red thing"), Candidate(videos=[clips["red"]]), Candidate(videos=[clips["blue"]])],
    )
    assert [(r["index"], r["score"]) for r in rows] == [(r.index, r.score) for r in expected]
    assert {r["id"] for r in rows} == {"text:0", clips["red"], clips["blue"]}
    assert len({r["score"] for r in rows}) == 3  # each video scored on its own frames


def test_a_query_video(tiny4_path, clips, capsys) -> None:
    argv = ["rerank", "--model", str(tiny4_path), "--query-video", clips["green"], "--text", "green", "--text", "red"]
    assert main([*argv, "--video", clips["blue"], "--json"]) == 0, capsys.readouterr().err
    document = json.loads(capsys.readouterr().out)
    assert document["query"] == {"text": "", "images": [], "videos": [clips["green"]]}
    engine = MiniReranker.from_pretrained(tiny4_path, config="paper")
    expected = engine.rerank(Query(videos=[clips["green"]]), ["green", "red", Candidate(videos=[clips["blue"]])])
    assert [(r["index"], r["score"]) for r in document["results"]] == [(r.index, r.score) for r in expected]


def test_an_unreadable_video_is_one_line(tiny4_path, tmp_path, capsys) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x07" * 200)
    assert main(["rerank", "--model", str(tiny4_path), "--query", "a clip", "--video", str(broken)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("minirerank: ") and "broken.mp4" in err


def test_without_the_video_extra_one_line_names_it(tiny4_path, clips, tmp_path) -> None:
    # A package named av that fails to import, first on the path: the interpreter as it is without PyAV.
    blocker = tmp_path / "no-pyav" / "av"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text('raise ModuleNotFoundError("No module named \'av\'", name="av")\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker.parent), os.environ.get("PYTHONPATH", "")])}
    for flag in ("--video", "--query-video"):
        argv = [*ENTRY, "rerank", "--model", str(tiny4_path), "--query", "a clip", "--text", "a red thing"]
        run = subprocess.run(
            [*argv, flag, clips["red"]], capture_output=True, text=True, timeout=240, env=env, check=False
        )
        assert run.returncode == 2, run.stderr
        assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, run.stderr
        assert run.stderr.startswith("minirerank: ") and "pip install 'minirerank-integrations[video]'" in run.stderr
        assert run.stdout == ""
