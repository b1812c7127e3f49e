"""Videos as the official reranker reads them: a file (or URL, data URI, bytes) sampled at ``fps`` under
``max_frames``, or a list of frames subsampled to ``max_frames``; every frame resized under the per-frame and
total pixel budgets; two frames per temporal group, each group placed after its timestamp
(``docs/design.md``, "Video"). A video is keyed by its bytes (or its frames'), every sampling setting and the
processing, and its frames are decoded only when it is encoded."""

from __future__ import annotations

import functools
import json
import math
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import asdict

import numpy as np
import torch
import xxhash

from ..errors import ImageLoadError, VideoLoadError
from ..store.memo import Memo
from .image_keys import MEMO_ENTRIES, file_stamp, key_image, settled
from .images import smart_resize
from .inputs import ImageSource
from .prompts import PreparedImage
from .sources import (
    URL_SCHEME,
    Fetcher,
    data_uri_bytes,
    describe_source,
    fetch_source,
    file_uri_path,
    read_source_file,
)
from .video_decode import (
    VideoProbe,
    check_frame_budget,
    decode_frames,
    normalize_and_patchify,
    probe_video,
    resize_frames,
)
from .video_settings import FRAME_FACTOR, VideoProcessing, VideoSettings

#: Part of every video digest; bumped when sampling, decoding or the resize changes what a source becomes.
VIDEO_KEY_VERSION = 1
#: Each frame of a frame list is first resized as an image, then with the video's bounds. qwen-vl-utils'
#: ``fetch_video`` passes its factor (32) where ``fetch_image`` takes the patch size, so frames are rounded to
#: multiples of 64 within its image defaults of 4 .. 16384 units of 64 x 64 (the official reranker gives a frame
#: list no image bounds): a 64 x 64 frame becomes 128 x 128 before the video's own resize.
FRAME_IMAGE_FACTOR = 64
FRAME_IMAGE_MIN_PIXELS = 4 * 64 * 64
FRAME_IMAGE_MAX_PIXELS = 16384 * 64 * 64
#: The frame rate qwen-vl-utils records for a frame list (its ``sample_fps`` default): frame i is at i / 2 s.
FRAME_LIST_FPS = 2.0
#: Largest video file read (bytes); the whole file is read to key it by its bytes.
MAX_VIDEO_FILE_BYTES = 1 << 30


def smart_nframes(total_frames: int, video_fps: float, settings: VideoSettings) -> int:
    """How many frames a video file gives: qwen-vl-utils' ``smart_nframes`` with ``fps``, ``min_frames`` and
    ``max_frames`` from ``settings`` (pairs of frames, at most the file's own). :class:`ValueError` below 2."""
    min_frames = math.ceil(settings.min_frames / FRAME_FACTOR) * FRAME_FACTOR
    max_frames = math.floor(settings.max_frames / FRAME_FACTOR) * FRAME_FACTOR
    wanted = total_frames / video_fps * settings.fps
    nframes = min(min(max(wanted, min_frames), max_frames), total_frames)
    nframes = math.floor(nframes / FRAME_FACTOR) * FRAME_FACTOR
    if not FRAME_FACTOR <= nframes <= total_frames:
        raise ValueError(f"{total_frames} frames give {nframes} samples; a video needs at least {FRAME_FACTOR} frames")
    return int(nframes)


def file_frame_indices(total_frames: int, nframes: int) -> list[int]:
    """The frames sampled from a file: evenly spaced, rounded (torch's float32 ``linspace``, as qwen-vl-utils)."""
    return torch.linspace(0, total_frames - 1, nframes).round().long().tolist()


def frame_list_indices(count: int, max_frames: int) -> list[int]:
    """The frames kept of a list of ``count``: all when at most ``max_frames``, else evenly spaced, truncated
    (numpy's ``linspace(dtype=int)``, as the official reranker's ``sample_frames``)."""
    if count <= max_frames:
        return list(range(count))
    return np.linspace(0, count - 1, max_frames, dtype=int).tolist()


def group_timestamps(indices: Sequence[int], fps: float, temporal: int) -> list[float]:
    """Each temporal group's time in seconds: the mean of its first and last frame's (the Qwen3-VL processor's
    ``_calculate_timestamps``; the last frame repeated to fill the last group)."""
    padded = list(indices)
    if len(padded) % temporal:
        padded.extend(padded[-1] for _ in range(temporal - len(padded) % temporal))
    times = [index / fps for index in padded]
    return [(times[i] + times[i + temporal - 1]) / 2 for i in range(0, len(times), temporal)]


def video_frame_size(
    height: int, width: int, nframes: int, total_pixels: int, settings: VideoSettings, factor: int
) -> tuple[int, int]:
    """The size every frame of a video is resized to: qwen-vl-utils' ``fetch_video`` bounds, each frame at least
    ``frame_min_pixels`` and at most ``frame_max_pixels`` or its share of ``total_pixels`` (2 x total / frames)."""
    min_pixels = settings.frame_min_pixels
    max_pixels = max(min(settings.frame_max_pixels, total_pixels / nframes * FRAME_FACTOR), int(min_pixels * 1.05))
    return smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)  # type: ignore[arg-type]


class PreparedVideo:
    """One video after sampling and the official resize: its temporal groups' grid and timestamps, its identity
    in cache keys, and its frames (uint8 [frames, 3, H, W]) decoded on first use."""

    def __init__(
        self,
        digest: str,
        grid_thw: tuple[int, int, int],
        timestamps: Sequence[float],
        merge_size: int,
        loader: Callable[[], torch.Tensor],
    ) -> None:
        self.digest = digest
        self.grid_thw = grid_thw  # (temporal groups, patch rows, patch columns)
        self.merge_size = merge_size
        self._loader = loader
        self._frames: torch.Tensor | None = None
        _, rows, columns = grid_thw
        self.groups = tuple(
            VideoGroup(self, index, (1, rows, columns), timestamp) for index, timestamp in enumerate(timestamps)
        )

    @property
    def frames(self) -> torch.Tensor:
        """The resized frames, uint8 [frames, 3, H, W], decoded on first use."""
        if self._frames is None:
            self._frames = self._loader()
        return self._frames

    @property
    def loaded(self) -> bool:
        return self._frames is not None

    @property
    def num_tokens(self) -> int:
        return sum(group.num_tokens for group in self.groups)

    def pixel_values(self, processing: VideoProcessing) -> torch.Tensor:
        """The video processor's ``pixel_values_videos`` of this video; checks the grid it gives."""
        values, grid = normalize_and_patchify(
            self.frames,
            mean=processing.image_mean,
            std=processing.image_std,
            rescale_factor=processing.rescale_factor,
            patch_size=processing.patch_size,
            temporal_patch_size=processing.temporal_patch_size,
            merge_size=processing.merge_size,
        )
        if grid != self.grid_thw:
            raise ValueError(f"video frames give the grid {grid}, prepared as {self.grid_thw}")
        return values

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PreparedVideo) and (self.digest, self.grid_thw) == (other.digest, other.grid_thw)

    def __hash__(self) -> int:
        return hash((self.digest, self.grid_thw))

    def __repr__(self) -> str:
        return f"PreparedVideo(grid_thw={self.grid_thw}, digest={self.digest!r}, loaded={self.loaded})"


class VideoGroup(PreparedImage):
    """One temporal group of a video (two frames): placed in the prompt as its own vision block after its
    timestamp, positioned as an image of one frame (``docs/design.md``, "Video"). It is a visual unit as an
    image is (a digest, a grid, tokens to prune); its features come from encoding the whole video."""

    __slots__ = ("index", "timestamp", "video")

    def __init__(self, video: PreparedVideo, index: int, grid_thw: tuple[int, int, int], timestamp: float) -> None:
        super().__init__(None, grid_thw, f"{video.digest}/{index}", video.merge_size, loader=self._no_image)
        self.video = video
        self.index = index
        self.timestamp = timestamp

    def _no_image(self):  # a group's pixels are its video's frames, encoded with the whole video
        raise TypeError("a video group has no image of its own; encode its video")

    def placeholder(self) -> str:
        return f"<{self.timestamp:.1f} seconds><|vision_start|>" + "<|video_pad|>" * self.num_tokens + "<|vision_end|>"

    def __repr__(self) -> str:
        return f"VideoGroup({self.index} of {self.video!r}, at {self.timestamp:.1f} s)"


def prepare_video(
    source: object,
    *,
    settings: VideoSettings,
    processing: VideoProcessing,
    fetcher: Fetcher | None = None,
) -> PreparedVideo:
    """Sample and size ``source`` (a path, URI, URL, bytes or a list of frames) as the official reranker does,
    keyed by its bytes (or each frame's), every sampling setting and the processing. Frames are decoded only
    when the video is encoded.

    Raises:
        VideoLoadError: unreadable, undecodable or empty, or over the frame or pixel budgets; names the source.
        MissingExtraError: a video file and no PyAV.
    """
    desc = describe_source(source)
    settings_key = json.dumps(
        {"v": VIDEO_KEY_VERSION, "settings": asdict(settings), "processing": asdict(processing)}, sort_keys=True
    )
    if isinstance(source, (list, tuple)):
        return _prepare_frames(source, desc, settings, processing, settings_key, fetcher)
    content, probe, read = _video_content(source, desc, fetcher, settings)
    try:
        nframes = smart_nframes(probe.frames, probe.fps, settings)
    except ValueError as exc:
        raise VideoLoadError(f"{desc}: {exc}") from exc
    indices = file_frame_indices(probe.frames, nframes)
    height, width = _sized(probe.height, probe.width, nframes, settings.file_total_pixels, settings, processing, desc)
    timestamps = group_timestamps(indices, probe.fps, processing.temporal_patch_size)
    hasher = xxhash.xxh3_128(settings_key.encode())
    hasher.update(b"file\0")
    hasher.update(content)
    grid = _grid(nframes, height, width, processing)

    def load() -> torch.Tensor:
        return resize_frames(decode_frames(read(), indices, desc, probe), height, width)

    return PreparedVideo(f"v:{hasher.hexdigest()}", grid, timestamps, processing.merge_size, load)


#: A settled video file's stamp -> (xxh3-128 of its bytes, its probe): a file seen before is not read again to key
#: it (its bytes are read when its frames are decoded, on a store miss, and checked against the digest).
_files: Memo[object, object] = Memo(MEMO_ENTRIES)


def _video_content(
    source: object, desc: str, fetcher: Fetcher | None, settings: VideoSettings
) -> tuple[bytes, VideoProbe, Callable[[], bytes]]:
    """The digest of a video's bytes, its probe, and how to get the bytes to decode."""
    path = _local_path(source, desc)
    if path is not None:
        try:
            info: os.stat_result | None = os.stat(path)
        except (OSError, ValueError):
            info = None  # the read below names the problem
        if info is not None and stat.S_ISREG(info.st_mode):
            seen = _files.get(file_stamp(path, info))
            if isinstance(seen, tuple):
                digest, probe = seen
                check_frame_budget(probe.frames, desc, settings.max_source_frames)
                return digest, probe, functools.partial(_checked_read, path, desc, digest)
        data = _read_file(path, desc)
        digest = xxhash.xxh3_128_digest(data)
        probe = probe_video(data, desc, max_source_frames=settings.max_source_frames)
        try:
            after = os.stat(path)
        except (OSError, ValueError):
            after = None
        if (
            info is not None
            and after is not None
            and file_stamp(path, after) == file_stamp(path, info)
            and settled(after)
        ):
            _files.put(file_stamp(path, info), (digest, probe))
        return digest, probe, lambda: data
    data = _read_video(source, desc, fetcher)
    probe = probe_video(data, desc, max_source_frames=settings.max_source_frames)
    return xxhash.xxh3_128_digest(data), probe, lambda: data


def _checked_read(path: str, desc: str, digest: bytes) -> bytes:
    """A remembered file's bytes, read when its frames are needed, refused if they are no longer the ones keyed."""
    data = _read_file(path, desc)
    if xxhash.xxh3_128_digest(data) != digest:
        raise VideoLoadError(f"{desc}: the file changed while it was in use; score it again")
    return data


def _local_path(source: object, desc: str) -> str | None:
    """The local file a path, ``PathLike`` or ``file://`` URI names; None for bytes, URLs and data URIs."""
    if isinstance(source, os.PathLike):
        try:
            return os.fsdecode(os.fspath(source))
        except (TypeError, ValueError) as exc:
            raise VideoLoadError(f"{desc}: not a usable file path: {exc}") from exc
    if not isinstance(source, str):
        return None
    text = source.strip()
    if text[:7].lower() == "file://":
        return file_uri_path(text, desc, error=VideoLoadError)
    if not text or URL_SCHEME.match(text) or text[:5].lower() == "data:":
        return None
    return source


def _read_video(source: object, desc: str, fetcher: Fetcher | None) -> bytes:
    """The encoded bytes of a video file, URL, data URI or bytes."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, os.PathLike):
        try:
            path = os.fsdecode(os.fspath(source))
        except (TypeError, ValueError) as exc:
            raise VideoLoadError(f"{desc}: not a usable file path: {exc}") from exc
        return _read_file(path, desc)
    if not isinstance(source, str):
        raise VideoLoadError(f"{desc}: unsupported video source type {type(source).__name__}")
    text = source.strip()
    lowered = text[:8].lower()
    if not text:
        raise VideoLoadError(f"{desc}: empty string is not a video source")
    if lowered.startswith(("http://", "https://")):
        return fetch_source(text, desc, fetcher, max_bytes=MAX_VIDEO_FILE_BYTES, error=VideoLoadError, kind="video")
    if lowered.startswith("data:"):
        return data_uri_bytes(text, desc, error=VideoLoadError, kind="video")
    if lowered.startswith("file://"):
        return _read_file(file_uri_path(text, desc, error=VideoLoadError), desc)
    if URL_SCHEME.match(text):
        raise VideoLoadError(
            f"{desc}: unsupported URL scheme {text.split(':', 1)[0]!r}; only http(s) (through image_fetcher=), "
            "file:// and data: URIs are accepted"
        )
    return _read_file(source, desc)


def _read_file(path: str, desc: str) -> bytes:
    return read_source_file(path, desc, MAX_VIDEO_FILE_BYTES, error=VideoLoadError, kind="video")


def _prepare_frames(
    frames: Sequence[ImageSource],
    desc: str,
    settings: VideoSettings,
    processing: VideoProcessing,
    settings_key: str,
    fetcher: Fetcher | None,
) -> PreparedVideo:
    """A list of frames: subsampled to ``max_frames``, each resized as an image, padded to whole pairs with its
    last frame, then resized together under the list's pixel budget (the official reranker and qwen-vl-utils)."""
    if not frames:
        raise VideoLoadError(f"{desc}: empty video (no frames)")
    if len(frames) > settings.max_source_frames:
        raise VideoLoadError(
            f"{desc}: {len(frames)} frames, more than the {settings.max_source_frames} allowed (video_max_source_frames)"
        )
    kept = [frames[i] for i in frame_list_indices(len(frames), settings.max_frames)]
    keyed = []
    for number, frame in enumerate(kept):
        try:
            keyed.append(
                key_image(
                    frame,
                    fetcher=fetcher,
                    min_pixels=FRAME_IMAGE_MIN_PIXELS,
                    max_pixels=FRAME_IMAGE_MAX_PIXELS,
                    factor=FRAME_IMAGE_FACTOR,
                )
            )
        except ImageLoadError as exc:
            raise VideoLoadError(f"{desc}: frame {number}: {exc}") from exc
    sizes = {k.size for k in keyed}
    if len(sizes) > 1:
        raise VideoLoadError(
            f"{desc}: its frames differ in size after the resize ({sorted(sizes)}); give frames of one size"
        )
    nframes = math.ceil(len(keyed) / FRAME_FACTOR) * FRAME_FACTOR
    padded = keyed + [keyed[-1]] * (nframes - len(keyed))
    width0, height0 = keyed[0].size
    height, width = _sized(height0, width0, nframes, settings.total_pixels, settings, processing, desc)
    timestamps = group_timestamps(range(nframes), FRAME_LIST_FPS, processing.temporal_patch_size)
    hasher = xxhash.xxh3_128(settings_key.encode())
    hasher.update(b"frames\0")
    for k in keyed:
        hasher.update(k.digest.encode() + b"\0")

    def load() -> torch.Tensor:
        pixels = [np.asarray(k.image if k.image is not None else k.loader()) for k in padded]
        stacked = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous()
        return resize_frames(stacked, height, width)

    grid = _grid(nframes, height, width, processing)
    return PreparedVideo(f"v:{hasher.hexdigest()}", grid, timestamps, processing.merge_size, load)


def _sized(
    height: int,
    width: int,
    nframes: int,
    total_pixels: int,
    settings: VideoSettings,
    processing: VideoProcessing,
    desc: str,
) -> tuple[int, int]:
    try:
        return video_frame_size(height, width, nframes, total_pixels, settings, processing.factor)
    except ImageLoadError as exc:
        raise VideoLoadError(f"{desc}: {exc}".replace("image ", "frame ", 1)) from exc


def _grid(nframes: int, height: int, width: int, processing: VideoProcessing) -> tuple[int, int, int]:
    groups = math.ceil(nframes / processing.temporal_patch_size)
    return (groups, height // processing.patch_size, width // processing.patch_size)
