"""Videos: sampling settings as the official reranker and qwen-vl-utils set them (``docs/design.md``, "Video")."""

from __future__ import annotations

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
