"""The engine's configuration: one validated pydantic model, plus the named presets.

A configuration is (format, band, exit layer, keep ratio, pruning guide); its meaning is fixed by the
naive reference in ``layers.py`` (``docs/design.md``, "The miniReranker computation").
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import ConfigError
from .images import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS
from .prompts import DEFAULT_INSTRUCTION, MAX_LENGTH
from .video_settings import (
    DEFAULT_VIDEO_FILE_TOTAL_PIXELS,
    DEFAULT_VIDEO_FPS,
    DEFAULT_VIDEO_FRAME_MAX_PIXELS,
    DEFAULT_VIDEO_FRAME_MIN_PIXELS,
    DEFAULT_VIDEO_MAX_FRAMES,
    DEFAULT_VIDEO_MAX_SOURCE_FRAMES,
    DEFAULT_VIDEO_MIN_FRAMES,
    DEFAULT_VIDEO_TOTAL_PIXELS,
)

PresetName = Literal["dense", "paper", "paper-narrow"]

#: Embedder layers that rank visual tokens by default: ingestion then runs the vision encoder, this many
#: embedder layers and the prefix up to the band end (docs/bench: where ingestion time goes).
GUIDE_LAYERS = 2


class RerankConfig(BaseModel):
    """How pairs are scored. Fields left ``None`` are filled from the model's depth by :meth:`resolve`.

    An invalid value raises :class:`~minirerank_integrations.errors.ConfigError` (a ``ValueError``), whether
    the configuration is built, validated from a dict or read from JSON.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, **data: object) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(_validation_message(exc)) from exc

    @classmethod
    def model_validate(cls, obj: object, **kwargs: object) -> RerankConfig:
        try:
            return super().model_validate(obj, **kwargs)  # type: ignore[arg-type]
        except ValidationError as exc:
            raise ConfigError(_validation_message(exc)) from exc

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **kwargs: object) -> RerankConfig:
        try:
            return super().model_validate_json(json_data, **kwargs)  # type: ignore[arg-type]
        except ValidationError as exc:
            raise ConfigError(_validation_message(exc)) from exc

    format: Literal["query_first", "vision_first"] = Field(
        "vision_first",
        description="query_first: the official prompt (dense baseline); vision_first: the visual side is a "
        "reusable prefix.",
    )
    prefix_side: Literal["auto", "document", "query"] = Field(
        "auto",
        description="vision_first only. auto: the document side when the document has images or neither side "
        "has any, the query side when only the query has images.",
    )
    exit_layer: int | None = Field(
        None, description="Decoder layers run before the score is read (1..depth); None: all layers."
    )
    band: tuple[int, int] | None = Field(
        None,
        description="Layers [start, end) where suffix tokens attend to the prefix; None: [0, exit_layer). "
        "start == end disables cross-segment attention.",
    )
    keep_ratio: float = Field(1.0, gt=0.0, le=1.0, description="Share of each image's visual tokens kept.")
    pruning_guide: Literal["embedder", "random"] = Field(
        "embedder", description="How visual tokens are ranked for pruning (random is the ablation baseline)."
    )
    pruning_guide_layers: int | None = Field(
        GUIDE_LAYERS,
        ge=1,
        description="embedder guide only: the embedder layers whose last-token attention ranks visual tokens (the "
        "first k; the rest never run); None: every layer (the full-depth guide).",
    )
    pruning_seed: int = Field(0, description="Seed of the random guide (mixed with the image's digest).")
    instruction: str = Field(DEFAULT_INSTRUCTION, description="The <Instruct> text of the prompt.")
    instruction_in_prefix: bool = Field(
        False,
        description="vision_first only, opt-in: the instruction precedes the visual side in the cached prefix, so "
        "the per-pair suffix holds only the other side and the closing tokens (another prompt: measure retention).",
    )
    min_pixels: int = Field(DEFAULT_MIN_PIXELS, gt=0, description="Lower bound of an image's area, in pixels.")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, gt=0, description="Upper bound of an image's area, in pixels.")
    video_fps: float = Field(
        DEFAULT_VIDEO_FPS, gt=0.0, le=1000.0, description="Frames sampled per second of a video file (official: 1)."
    )
    video_max_frames: int = Field(
        DEFAULT_VIDEO_MAX_FRAMES,
        ge=2,
        description="At most this many frames per video (official: 64); a longer frame list is subsampled uniformly.",
    )
    video_min_frames: int = Field(
        DEFAULT_VIDEO_MIN_FRAMES,
        ge=2,
        description="At least this many frames from a video file that has them (qwen-vl-utils: 4).",
    )
    video_frame_min_pixels: int = Field(
        DEFAULT_VIDEO_FRAME_MIN_PIXELS, gt=0, description="Lower bound of a video frame's area (128 x 32 x 32)."
    )
    video_frame_max_pixels: int = Field(
        DEFAULT_VIDEO_FRAME_MAX_PIXELS,
        gt=0,
        description="Upper bound of a video frame's area (official: 768 x 32 x 32).",
    )
    video_total_pixels: int = Field(
        DEFAULT_VIDEO_TOTAL_PIXELS,
        gt=0,
        description="A frame list's pixel budget over all frames: each frame gets at most 2 x this / frames "
        "(official MAX_TOTAL_PIXELS: 10 x 768 x 32 x 32).",
    )
    video_file_total_pixels: int = Field(
        DEFAULT_VIDEO_FILE_TOTAL_PIXELS,
        gt=0,
        description="A video file's pixel budget over its sampled frames (the official reranker passes none, so "
        "qwen-vl-utils' default, 128000 x 32 x 32 x 0.9, applies).",
    )
    video_max_source_frames: int = Field(
        DEFAULT_VIDEO_MAX_SOURCE_FRAMES,
        gt=0,
        description="A video with more frames than this is refused (VideoLoadError) before it is decoded.",
    )
    max_length: int = Field(MAX_LENGTH, gt=16, description="Token limit per prompt (official: 10240).")
    batch_size: int = Field(16, gt=0, description="Pairs per batched forward pass.")

    @field_validator(
        "exit_layer",
        "band",
        "keep_ratio",
        "pruning_guide_layers",
        "pruning_seed",
        "min_pixels",
        "max_pixels",
        "video_fps",
        "video_max_frames",
        "video_min_frames",
        "video_frame_min_pixels",
        "video_frame_max_pixels",
        "video_total_pixels",
        "video_file_total_pixels",
        "video_max_source_frames",
        "max_length",
        "batch_size",
        mode="before",
    )
    @classmethod
    def _no_bools(cls, value: object, info: object) -> object:
        # pydantic reads True as 1: exit_layer=True or band=(True, 2) would pass unnoticed.
        items = value if isinstance(value, (tuple, list)) else (value,)
        if any(isinstance(item, bool) for item in items):
            raise ValueError(f"expects a number, got the bool {value!r}")
        return value

    @model_validator(mode="after")
    def _check(self) -> RerankConfig:
        if self.min_pixels > self.max_pixels:
            raise ConfigError(f"min_pixels ({self.min_pixels}) must not exceed max_pixels ({self.max_pixels})")
        if self.video_min_frames > self.video_max_frames:
            raise ConfigError(
                f"video_min_frames ({self.video_min_frames}) must not exceed video_max_frames ({self.video_max_frames})"
            )
        if self.video_frame_min_pixels > self.video_frame_max_pixels:
            raise ConfigError(
                f"video_frame_min_pixels ({self.video_frame_min_pixels}) must not exceed video_frame_max_pixels "
                f"({self.video_frame_max_pixels})"
            )
        if not math.isfinite(self.video_fps):
            raise ConfigError(f"video_fps must be finite, got {self.video_fps}")
        if self.band is not None:
            start, end = self.band
            if not 0 <= start <= end:
                raise ConfigError(f"band {self.band} must satisfy 0 <= start <= end")
        try:
            self.instruction.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ConfigError(f"instruction cannot be encoded as UTF-8 ({exc.reason} at position {exc.start})") from exc
        if self.exit_layer is not None and self.exit_layer < 1:
            raise ConfigError(f"exit_layer {self.exit_layer} must be >= 1")
        return self

    def resolve(self, num_layers: int) -> RerankConfig:
        """Check the configuration against a model of ``num_layers`` decoder layers and fill in defaults."""
        exit_layer = num_layers if self.exit_layer is None else self.exit_layer
        if not 1 <= exit_layer <= num_layers:
            raise ConfigError(f"exit_layer {exit_layer} is outside this model's 1..{num_layers} layers")
        band = (0, exit_layer) if self.band is None else self.band
        if band[1] > exit_layer:
            raise ConfigError(
                f"band {band} ends after exit_layer {exit_layer}: the band must lie within the layers that run"
            )
        if self.format == "query_first" and band != (0, exit_layer):
            raise ConfigError(
                f"band {band} needs format='vision_first': query_first has one segment, attending everywhere"
            )
        return self.model_copy(update={"exit_layer": exit_layer, "band": band})

    @classmethod
    def for_model(cls, config: RerankConfig | PresetName, num_layers: int) -> RerankConfig:
        """``config`` (a configuration or a preset name) checked and resolved for a model of ``num_layers``."""
        if isinstance(config, str):
            return cls.preset(config, num_layers)
        if isinstance(config, RerankConfig):
            return config.resolve(num_layers)
        raise ConfigError(
            f"config must be a RerankConfig or a preset name, got {type(config).__name__}"
            + (" (build one with RerankConfig(**settings))" if isinstance(config, dict) else "")
        )

    @classmethod
    def preset(cls, name: PresetName, num_layers: int, **overrides: object) -> RerankConfig:
        """A named configuration scaled to a model of ``num_layers`` layers.

        - ``dense``: the official query-first reranker, every layer, every token.
        - ``paper``: the miniReranker paper's configuration. One scaling rule: exit after
          E = max(1, floor(0.58 * depth)) layers (the paper's ~58% of depth), the band is the upper half of
          the layers that run, [E // 2, E) (about 0.29 * depth to the exit: the paper's "layers 8-16", which
          "cuts interaction complexity by about 50%"), and half of each image's visual tokens, ranked by the
          embedder. 28 layers: exit 16, band [8, 16); 36 layers: exit 20, band [10, 20); 8 layers: exit 4,
          band [2, 4). The prefix stores the band's E - E // 2 layers of its kept tokens.
        - ``paper-narrow``: ``paper`` with a band of max(1, round(depth / 7)) layers from round(depth / 4)
          ([7, 11) of 28): half the band layers, so half the stored bytes and cheaper per-pair band layers.
        """
        if name == "dense":
            base = cls(format="query_first")
        elif name in ("paper", "paper-narrow"):
            exit_layer = max(1, math.floor(0.58 * num_layers))
            if name == "paper":
                start, end = exit_layer // 2, exit_layer
            else:
                start = min(round(num_layers / 4), exit_layer - 1) if exit_layer > 1 else 0
                end = min(start + max(1, round(num_layers / 7)), exit_layer)
            base = cls(
                format="vision_first",
                exit_layer=exit_layer,
                band=(start, end),
                keep_ratio=0.5,
                pruning_guide="embedder",
            )
        else:
            raise ConfigError(f"unknown preset {name!r}; choose 'dense', 'paper' or 'paper-narrow'")
        if overrides:
            base = cls(**{**base.model_dump(), **overrides})
        return base.resolve(num_layers)


def _validation_message(exc: ValidationError) -> str:
    """pydantic's errors as one line: ``RerankConfig: field: message; ...``."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        # A custom __init__ is re-entered by model_validate: unwrap what it already phrased.
        message = str(error["msg"]).removeprefix("Value error, ").removeprefix("invalid RerankConfig: ")
        parts.append(f"{where}: {message}" if where else message)
    return "invalid RerankConfig: " + "; ".join(parts)
