"""Inputs and helpers shared by the tests of hostile inputs, configuration races and store faults."""

from __future__ import annotations

import io
import sqlite3
from contextlib import closing
from pathlib import Path

from pictures import drawn_image

from minirerank_integrations import (
    RerankConfig,
)
from minirerank_integrations.engine.inputs import Candidate

A = RerankConfig(format="vision_first", exit_layer=4, band=(0, 4))
B = RerankConfig(format="vision_first", exit_layer=3, band=(1, 2), keep_ratio=0.5, pruning_guide="random")
QUERY = "a red circle on the left"


def png(seed: int, size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    drawn_image(*size, seed=seed).save(buffer, format="PNG")
    return buffer.getvalue()


def docs() -> list[Candidate]:
    return [Candidate(images=[png(200 + i)], id=f"d{i}") for i in range(2)] + [Candidate(text="a blue square")]


def scores(results) -> list[float]:
    return [r.score for r in sorted(results, key=lambda r: r.index)]


def rows(directory: Path) -> list[tuple]:
    with closing(sqlite3.connect(directory / "cache.db")) as con:
        return con.execute("SELECT rowid, key, mode, filename, value FROM Cache ORDER BY rowid").fetchall()
