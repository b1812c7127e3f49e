"""The installed entry point, run as a shell user runs it: each command's --help, quiet loading, one-line
errors for bad input (exit status 2, no traceback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from minirerank_integrations.cli import build_parser

# The console script beside this interpreter when installed (make installs it into .venv/bin), else the module.
_SCRIPT = Path(sys.executable).with_name("minirerank")
ENTRY = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "minirerank_integrations.cli"]


def run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS")}
    env["HF_HUB_OFFLINE"] = "1"  # a missing model is reported at once, not after the hub's retries
    return subprocess.run([*ENTRY, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)


def _commands() -> list[list[str]]:
    """Every command and subcommand path of the parser (e.g. ["cache", "stats"])."""
    found: list[list[str]] = []

    def walk(parser, path):
        for action in parser._actions:
            if action.__class__.__name__ == "_SubParsersAction":
                for name, sub in action.choices.items():
                    found.append([*path, name])
                    walk(sub, [*path, name])

    walk(build_parser(), [])
    return found


@pytest.mark.parametrize("command", [[], *_commands()], ids=lambda c: " ".join(c) or "minirerank")
def test_every_command_has_help(command: list[str]) -> None:
    done = run(*command, "--help", timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: minirerank") and done.stderr == ""
    assert all(word in done.stdout for word in command)


def test_rerank_through_the_entry_point_is_quiet(tiny4_path: Path) -> None:
    done = run(
        "rerank",
        *("--model", str(tiny4_path), "--config", "dense"),
        *("--query", "a red circle", "--text", "a red", "--text", "b", "--json"),
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no weight-loading bars or warnings from transformers
    fast = run("rerank", "--model", str(tiny4_path), "--query", "a", "--text", "b")  # paper, never adapted
    assert fast.returncode == 0, fast.stderr
    assert fast.stderr.count("\n") == 1 and "was not validated" in fast.stderr  # our one warning, nothing else
    assert [r["index"] for r in json.loads(done.stdout)["results"]] in ([0, 1], [1, 0])
    verbose = run("--verbose", "rerank", "--model", str(tiny4_path), "--query", "a", "--text", "b")
    assert verbose.returncode == 0 and "Loading weights" in verbose.stderr  # what the default hides


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["rerank", "--query", "a red circle", "--image", "absent.png"],
            "candidate 0 (id 'absent.png')",
        ),
        (["rerank", "--query", "x", "--pdf", "absent.pdf"], "absent.pdf: no such file"),
        (["demo", "--model", "./no-such-model"], "./no-such-model"),
        (["cache", "stats", "--cache-dir", "no-such-cache"], "no prefix cache in 'no-such-cache'"),
        (["cache", "verify", "--cache-dir", "no-such-cache"], "no prefix cache in 'no-such-cache'"),
        (["cache", "clear", "--cache-dir", "."], "no prefix cache in '.'"),
        (["eval", "--configs", "bad=[", "--queries", "1"], "bad"),
        (["adapt", "--model", "./no-such-model", "--data", "nowhere", "--out", "o"], "nowhere: no such file"),
        (["calibrate", "--model", "./no-such-model", "--data", "nowhere", "--out", "o"], "nowhere: no such file"),
        (["bench", "--sizes", "0", "--no-plots", "--no-profile", "--out", "o"], "--sizes[0]: Input should be greater"),
    ],
    ids=[
        "rerank-missing-image",
        "rerank-missing-pdf",
        "demo-missing-model",
        "cache-stats-missing-dir",
        "cache-verify-missing-dir",
        "cache-clear-not-a-cache",
        "eval-bad-config",
        "adapt-missing-data",
        "calibrate-missing-data",
        "bench-bad-size",
    ],
)
def test_bad_input_is_one_line_and_status_2(args: list[str], message: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    done = run(*args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    first = done.stderr.strip().splitlines()[0]
    assert first.startswith("minirerank: ") and message in first, done.stderr
