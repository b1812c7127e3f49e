"""What a ``minirerank bench`` run leaves on disk: ``bench.json``, ``profile.txt`` and the PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["report", "write_outputs"]


def write_outputs(result: dict, out_dir: str | Path, *, plots: bool = True) -> list[Path]:
    """``bench.json``, ``profile.txt`` and (with matplotlib) the PNG plots; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "bench.json", out / "profile.txt"]
    written[0].write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    written[1].write_text(
        "\n\n".join(f"== {name} ==\n{text}" for name, text in result["profiles"].items()) + "\n", encoding="utf-8"
    )
    if plots:
        from .plots import plot_all

        written.extend(plot_all(result, out))
    return written


def report(result: dict, text: str, out: str | Path | None) -> None:
    """Print a measurement's text and, when ``out`` names a file, write the result there as JSON and the text beside
    it (``.txt``): what ``docs/bench/`` keeps of a run of one of the bench's scripts."""
    print(text)
    if out:
        path = Path(out)
        path.write_text(json.dumps(result, indent=1), encoding="utf-8")
        path.with_suffix(".txt").write_text(text + "\n", encoding="utf-8")
