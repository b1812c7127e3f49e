"""The video settings: the official reranker's and qwen-vl-utils' defaults, the :class:`VideoSettings` a
configuration gives, and the checkpoint's :class:`VideoProcessing` (no heavy imports: the configuration reads
its defaults here)."""

from __future__ import annotations

from dataclasses import dataclass

#: Frames sampled per second of a video file (the official reranker's ``FPS``).
DEFAULT_VIDEO_FPS = 1.0
#: At most this many frames per video (the official ``MAX_FRAMES``); a frame list longer than this is
#: subsampled uniformly.
DEFAULT_VIDEO_MAX_FRAMES = 64
#: At least this many frames from a video file (qwen-vl-utils' ``FPS_MIN_FRAMES``), when it has them.
DEFAULT_VIDEO_MIN_FRAMES = 4
#: Each frame's area is at most this many pixels (the official ``FRAME_MAX_PIXELS``: 768 merged tokens).
DEFAULT_VIDEO_FRAME_MAX_PIXELS = 768 * 32 * 32
#: ... and at least this many (qwen-vl-utils' ``VIDEO_MIN_TOKEN_NUM`` of 128 merged tokens).
DEFAULT_VIDEO_FRAME_MIN_PIXELS = 128 * 32 * 32
#: A frame list's pixel budget over all its frames (the official ``MAX_TOTAL_PIXELS``, 10 frames' worth).
DEFAULT_VIDEO_TOTAL_PIXELS = 10 * DEFAULT_VIDEO_FRAME_MAX_PIXELS
#: A video file's pixel budget: the official reranker passes none for a file, so qwen-vl-utils' default
#: (``MODEL_SEQ_LEN`` 128000 tokens x 32 x 32 x 0.9) applies.
DEFAULT_VIDEO_FILE_TOTAL_PIXELS = int(128000 * 32 * 32 * 0.9)
#: A video file with more frames than this is refused (a decode bomb), before any frame is decoded.
DEFAULT_VIDEO_MAX_SOURCE_FRAMES = 216_000  # two hours at 30 frames per second

#: Frames are taken in pairs (qwen-vl-utils' ``FRAME_FACTOR``, the temporal patch).
FRAME_FACTOR = 2


@dataclass(frozen=True)
class VideoSettings:
    """The sampling settings of :class:`~.config.RerankConfig` (its ``video_*`` fields), as one value."""

    fps: float = DEFAULT_VIDEO_FPS
    max_frames: int = DEFAULT_VIDEO_MAX_FRAMES
    min_frames: int = DEFAULT_VIDEO_MIN_FRAMES
    frame_min_pixels: int = DEFAULT_VIDEO_FRAME_MIN_PIXELS
    frame_max_pixels: int = DEFAULT_VIDEO_FRAME_MAX_PIXELS
    total_pixels: int = DEFAULT_VIDEO_TOTAL_PIXELS
    file_total_pixels: int = DEFAULT_VIDEO_FILE_TOTAL_PIXELS
    max_source_frames: int = DEFAULT_VIDEO_MAX_SOURCE_FRAMES

    @classmethod
    def of(cls, cfg: object) -> VideoSettings:
        """The settings of a :class:`~.config.RerankConfig`."""
        return cls(**{name: getattr(cfg, f"video_{name}") for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class VideoProcessing:
    """How frames become ``pixel_values``: the checkpoint's video processor settings (its
    ``video_preprocessor_config.json``, else its image processor's, which Qwen3-VL checkpoints share)."""

    patch_size: int = 16
    temporal_patch_size: int = 2
    merge_size: int = 2
    image_mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    image_std: tuple[float, ...] = (0.5, 0.5, 0.5)
    rescale_factor: float = 1 / 255

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size
