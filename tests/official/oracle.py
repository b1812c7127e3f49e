"""Running the official reranker (``tests/official``) in a child process that sees the oracle folder
(``make oracle-deps``: torchvision, decord and qwen-vl-utils, which the core never imports)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ORACLE = Path(sys.prefix) / "oracle"
RUNNER = Path(__file__).resolve().parent / "run_official.py"


def run_official(checkpoint: Path, cases: list[dict], *, max_frames: int, workdir: Path) -> dict:
    """The official scores and token ids of ``cases`` (see ``run_official.py``)."""
    if not (ORACLE / "torchvision").is_dir() or not (ORACLE / "qwen_vl_utils").is_dir():
        pytest.fail(f"the official video path needs the oracle folder {ORACLE}: run `make oracle-deps`")
    spec = workdir / "cases.json"
    spec.write_text(json.dumps({"max_frames": max_frames, "cases": cases}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ORACLE), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, str(RUNNER), str(checkpoint), str(spec)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if done.returncode != 0:
        raise AssertionError(f"the official reranker failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
