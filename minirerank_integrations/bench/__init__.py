"""The benchmark runner behind ``minirerank bench``: the engine's speed at the sizes users run.

In one process and on identical inputs it times the dense baselines (the plain transformers forward of the
official query-first prompt, one pair per forward and batched) and the engine cumulatively (vision-first
prefix reuse, then the band, the early exit and pruning, which together are the ``paper`` preset), each with
an empty prefix store (cold) and a precached one read from disk (warm). Models are random-weight models of the
published Qwen3-VL shapes (:mod:`.shapes`): speed depends on shapes and token counts, not on weight values.
:mod:`.workload` builds the documents, queries and a tokenizer in which the workload's words are single
tokens; :mod:`.settings` holds what a run measures (``BenchSettings``, no torch), :mod:`.runner` measures it
(with :mod:`.dense` for the official forward, :mod:`.measure` for time and peak memory, :mod:`.counting_store`
for store reads, :mod:`.rows` and :mod:`.machine` for what the result records), :mod:`.outputs` writes JSON and
:mod:`.plots` the PNG figures.

The other speed and bytes measurements run as ``python -m minirerank_integrations.bench.<module>``:
:mod:`.prefix_bytes` (bytes stored per document prefix, measured and estimated per shape), :mod:`.capacity`
(documents per GiB of Redis, ingestion documents/s) and :mod:`.train_step` (training step time against dense).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from .settings import BenchSettings
from .shapes import SHAPES, ModelShape

if TYPE_CHECKING:
    from .outputs import write_outputs
    from .runner import run_bench

__all__ = ["SHAPES", "BenchSettings", "ModelShape", "run_bench", "write_outputs"]


def __getattr__(name: str) -> object:
    # The runner imports torch and the engine: loaded on first use, so the shapes table does not need them.
    if name in ("run_bench", "write_outputs"):
        return getattr(import_module(".runner", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
