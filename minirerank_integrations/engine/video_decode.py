"""Decoding video files with PyAV (the ``video`` extra) and the pixel work on sampled frames: the resize
qwen-vl-utils applies to a whole video (torchvision's bicubic, antialiased, on uint8 frames) and the Qwen3-VL
video processor's normalisation and temporal patching, here in torch alone (``docs/design.md``, "Video")."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import MissingExtraError, VideoLoadError
from .sources import MAX_SOURCE_PIXELS

__all__ = [
    "VideoProbe",
    "check_frame_budget",
    "decode_frames",
    "import_av",
    "normalize_and_patchify",
    "probe_video",
    "resize_frames",
]

_INSTALL = "pip install 'minirerank-integrations[video]'"


def import_av():  # -> the av module
    """PyAV, or :class:`MissingExtraError` naming the extra that installs it."""
    try:
        import av
    except ImportError as exc:
        raise MissingExtraError(
            f"decoding a video file needs PyAV, which is not installed: {_INSTALL} (a list of frames needs nothing extra)"
        ) from exc
    return av


@dataclass(frozen=True)
class VideoProbe:
    """What a video file's header says: its frame count, average frame rate and frame size."""

    frames: int
    fps: float
    width: int
    height: int


def _av_errors(av) -> tuple[type[BaseException], ...]:
    return (av.error.FFmpegError, OSError, ValueError, IndexError, EOFError)


def probe_video(data: bytes, desc: str, *, max_source_frames: int) -> VideoProbe:
    """Read ``data``'s container header (no frame is decoded when the container records its frame count; when
    it does not, the packets are counted). :class:`VideoLoadError` for no video stream, no frames, a frame rate
    the file does not give, or more frames or larger frames than the budgets allow."""
    av = import_av()
    if not data:
        raise VideoLoadError(f"{desc}: empty video data (0 bytes)")
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise VideoLoadError(f"{desc}: the file holds no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            width, height = stream.codec_context.width, stream.codec_context.height
            frames = int(stream.frames or 0)
            if frames <= 0:  # Matroska and WebM record no count: count the packets (no decoding)
                frames = sum(1 for packet in container.demux(stream) if packet.size)
    except VideoLoadError:
        raise
    except _av_errors(av) as exc:
        raise VideoLoadError(f"{desc}: not a decodable video: {exc}") from exc
    if frames <= 0:
        raise VideoLoadError(f"{desc}: empty video (no frames)")
    check_frame_budget(frames, desc, max_source_frames)
    if not rate or float(rate) <= 0:
        raise VideoLoadError(f"{desc}: the video gives no frame rate")
    if width <= 0 or height <= 0:
        raise VideoLoadError(f"{desc}: the video gives no frame size")
    if width * height > MAX_SOURCE_PIXELS:
        raise VideoLoadError(
            f"{desc}: its frames are {width}x{height} = {width * height} pixels, more than the {MAX_SOURCE_PIXELS} "
            "allowed (max_source_pixels); refusing to decode it"
        )
    return VideoProbe(frames, float(rate), width, height)


def check_frame_budget(frames: int, desc: str, max_source_frames: int) -> None:
    """:class:`VideoLoadError` for a video of more than ``max_source_frames`` frames."""
    if frames > max_source_frames:
        raise VideoLoadError(
            f"{desc}: the video holds {frames} frames, more than the {max_source_frames} allowed "
            "(video_max_source_frames); refusing to decode it"
        )


def decode_frames(data: bytes, indices: Sequence[int], desc: str, probe: VideoProbe) -> torch.Tensor:
    """The frames at ``indices`` (ascending, repeats allowed) as uint8 [n, 3, H, W], RGB as PyAV's ``rgb24``."""
    av = import_av()
    wanted = sorted(set(indices))
    found: dict[int, np.ndarray] = {}
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for number, frame in enumerate(container.decode(stream)):
                if number in wanted:
                    found[number] = frame.to_ndarray(format="rgb24")
                if number >= wanted[-1]:
                    break
    except _av_errors(av) as exc:
        raise VideoLoadError(f"{desc}: not a decodable video: {exc}") from exc
    missing = [i for i in wanted if i not in found]
    if missing:
        raise VideoLoadError(f"{desc}: the video declares {probe.frames} frames but frame {missing[0]} does not decode")
    shapes = {found[i].shape for i in wanted}
    if shapes != {(probe.height, probe.width, 3)}:
        raise VideoLoadError(f"{desc}: decoded frames of sizes {sorted(shapes)} differ from the declared size")
    stacked = np.stack([found[i] for i in indices])  # [n, H, W, 3]
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous()


def resize_frames(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 [n, 3, h, w] -> uint8 [n, 3, height, width] as qwen-vl-utils resizes a video: torchvision's
    ``resize(BICUBIC, antialias=True)`` on uint8, i.e. float32 interpolation, clamped, rounded, cast back."""
    resized = torch.nn.functional.interpolate(
        frames.to(torch.float32), size=[height, width], mode="bicubic", align_corners=False, antialias=True
    )
    return resized.clamp(min=0, max=255).round().to(torch.uint8)


def normalize_and_patchify(
    frames: torch.Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    rescale_factor: float,
    patch_size: int,
    temporal_patch_size: int,
    merge_size: int,
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """uint8 [n, 3, H, W] -> (pixel_values [groups * h * w, 3 * temporal * patch * patch], (groups, h, w)), as
    the Qwen3-VL video processor computes them: the rescale folded into mean and std, the last frame repeated
    to a whole temporal patch, patches ordered merge block by merge block."""
    fused_mean = torch.tensor(list(mean)) * (1.0 / rescale_factor)  # float32, as transformers fuses them
    fused_std = torch.tensor(list(std)) * (1.0 / rescale_factor)
    video = frames.to(torch.float32).sub(fused_mean.view(-1, 1, 1)).div(fused_std.view(-1, 1, 1))
    if pad := -video.shape[0] % temporal_patch_size:
        video = torch.cat([video, video[-1:].expand(pad, -1, -1, -1)])
    count, channels, height, width = video.shape
    grid_t, grid_h, grid_w = count // temporal_patch_size, height // patch_size, width // patch_size
    patches = video.view(
        grid_t,
        temporal_patch_size,
        channels,
        grid_h // merge_size,
        merge_size,
        patch_size,
        grid_w // merge_size,
        merge_size,
        patch_size,
    )
    patches = patches.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    flat = patches.reshape(grid_t * grid_h * grid_w, channels * temporal_patch_size * patch_size * patch_size)
    return flat, (grid_t, grid_h, grid_w)
