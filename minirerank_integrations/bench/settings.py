"""What one ``minirerank bench`` run measures, as validated data: :class:`BenchSettings`.

Free of torch, so that ``minirerank bench --help`` builds one flag per field (name, description, default)
without loading a model library. An invalid value raises :class:`~minirerank_integrations.errors.ConfigError`
naming the field. Every field's description ends with its unit.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import Field, JsonValue, field_validator

from ..quality.settings import CheckedSettings
from ..store.precision import Storage
from .shapes import SHAPES

__all__ = ["ENGINE_METHODS", "BenchSettings", "EngineMethod"]

#: The engine's rows, cumulatively: prefix reuse, then the band, the early exit, and pruning (the preset).
EngineMethod = Literal["vision-first", "+band", "+exit", "paper"]
ENGINE_METHODS: tuple[EngineMethod, ...] = get_args(EngineMethod)

_Pixels = Annotated[int, Field(ge=32)]
_Count = Annotated[int, Field(ge=1)]


class BenchSettings(CheckedSettings):
    """One ``minirerank bench`` run; the defaults are a quick run on the small shape.

    ``minirerank bench`` has one flag per field (``warm_n`` is ``--warm-n``; ``profile`` and
    ``instruction_in_prefix``, on by default, are turned off by ``--no-profile`` and ``--no-instruction-row``)
    with these defaults and descriptions.
    """

    shape: str = Field(
        default="small",
        description="model shape built with random weights (bench.shapes)",
        json_schema_extra={"choices": list[JsonValue](sorted(SHAPES))},
    )
    sizes: tuple[_Pixels, ...] = Field(default=(128, 256), description="page sides measured, pixels")
    warm_n: tuple[_Count, ...] = Field(
        default=(1, 10, 100), description="documents per query of the warm and cold rows (sorted), documents"
    )
    large_n: _Count | None = Field(
        default=None, description="an extra warm N for paper at the smallest size (e.g. 1000), documents"
    )
    dense_pairs: _Count = Field(default=1, description="pairs timed for dense-official (scaled to N), pairs")
    dense_batch: _Count = Field(default=2, description="pairs in the dense-batched forward, pairs")
    ingest_docs: _Count = Field(default=1, description="documents really ingested per configuration, documents")
    text_candidates: _Count = Field(default=10, description="N of the image query over text candidates, candidates")
    # vision-first stores every layer of every token: its warm store would be large, so its N is capped
    full_kv_max_n: _Count = Field(default=10, description="largest warm N of vision-first alone, documents")
    methods: tuple[EngineMethod, ...] = Field(
        default=ENGINE_METHODS, description="the engine's configurations measured (cumulative)"
    )
    storage: Storage = Field(default="bfloat16", description="precision of the warm disk store's entries")
    device: str = Field(
        default="cpu", description="where the model runs, e.g. cpu, cuda", json_schema_extra={"metavar": "DEVICE"}
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        default="float32", description="dtype of the random weights"
    )
    guide_layers: tuple[_Count | None, ...] = Field(
        default=(1, 2, 4, None),
        description="pruning-guide depths whose ingestion stage is timed ('all': the full-depth guide), layers",
        json_schema_extra={"none": "all"},
    )
    instruction_in_prefix: bool = Field(
        default=True,
        description="time paper with the instruction moved into the prefix too",
        json_schema_extra={"flag": "--no-instruction-row"},
    )
    profile: bool = Field(
        default=True,
        description="profile a warm and a cold query (torch.profiler)",
        json_schema_extra={"flag": "--no-profile"},
    )
    # a CPU run's budget goes to the rows its targets read
    detail_sizes: tuple[_Pixels, ...] | None = Field(
        default=None,
        description="sizes where every method is measured (None: all); elsewhere dense-official, paper and its "
        "stages with the default guide only, pixels",
    )
    work_dir: str | None = Field(
        default=None,
        description="where the disk stores live, deleted after each method (None: a temporary one)",
        json_schema_extra={"metavar": "DIR"},
    )
    vocabulary: Literal["auto", "qwen", "workload"] = Field(
        default="auto",
        description="tokenizer: Qwen's real vocabulary (the dev extra has its ranks), a stand-in whose workload "
        "words are single tokens, or Qwen's when installed; the result names the one used",
    )
    seed: int = Field(default=0, ge=0, description="seed of the random weights")

    @field_validator("shape")
    @classmethod
    def _known_shape(cls, value: str) -> str:
        if value not in SHAPES:
            raise ValueError(f"unknown shape {value!r}; choose one of {sorted(SHAPES)}")
        return value

    @field_validator("sizes", "warm_n", "detail_sizes")
    @classmethod
    def _not_empty(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is not None and not value:
            raise ValueError("needs at least one value")
        return value

    @field_validator("warm_n")
    @classmethod
    def _sorted(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(sorted(value))
