"""Running the official video path (``run_reference.py``: the official prompt, qwen-vl-utils, transformers'
Qwen3-VL processor and a stock forward) in a child process that sees the oracle folder (``make oracle-deps``:
torchvision, decord and qwen-vl-utils, which the core never imports)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ORACLE = Path(sys.prefix) / "oracle"
RUNNER = Path(__file__).resolve().parent / "run_reference.py"


class OfficialRun:
    """The official path scoring ``cases`` in a child process (see ``run_reference.py`` for their form), started
    at once so the test's own work overlaps it; :meth:`result` waits for its scores and token ids."""

    def __init__(
        self,
        checkpoint: Path,
        cases: list[dict],
        *,
        max_frames: int,
        workdir: Path,
        nframes: list[list[float]] | None = None,
    ) -> None:
        if not (ORACLE / "torchvision").is_dir() or not (ORACLE / "qwen_vl_utils").is_dir():
            pytest.fail(f"the official video path needs the oracle folder {ORACLE}: run `make oracle-deps`")
        spec = workdir / "cases.json"
        spec.write_text(json.dumps({"max_frames": max_frames, "cases": cases, "nframes": nframes or []}))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ORACLE), os.environ.get("PYTHONPATH", "")])}
        self.process = subprocess.Popen(
            [sys.executable, str(RUNNER), str(checkpoint), str(spec)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def result(self) -> dict:
        try:
            out, err = self.process.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        if self.process.returncode != 0:
            raise AssertionError(f"the official video path failed:\n{err[-4000:]}")
        return json.loads(out.strip().splitlines()[-1])
