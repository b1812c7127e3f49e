"""Small deterministic videos written with PyAV at test time, and their frames as pictures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def clip_frames(count: int, width: int = 64, height: int = 64, seed: int = 0) -> list[Image.Image]:
    """``count`` frames of a coloured disc moving left to right over a background of the seed's colour."""
    rng = np.random.default_rng(seed)
    background, disc = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    frames = []
    ys, xs = np.mgrid[0:height, 0:width]
    for index in range(count):
        cx = (index + 0.5) * width / count
        cy = height / 2 + rng.integers(-height // 8, height // 8 + 1)
        inside = (xs - cx) ** 2 + (ys - cy) ** 2 <= (min(width, height) / 4) ** 2
        pixels = np.where(inside[..., None], disc, background).astype(np.uint8)
        pixels[..., 2] = (pixels[..., 2].astype(int) + index * 9) % 256  # every frame differs
        frames.append(Image.fromarray(pixels, "RGB"))
    return frames


def write_clip(path: str | Path, frames: list[Image.Image], fps: int = 4, codec: str = "png") -> Path:
    """Write ``frames`` as a video file: PNG frames in a QuickTime container by default (lossless, so every
    decoder gives the same pixels), or another PyAV codec (``libx264`` in ``.mp4``; ``ffv1``, lossless, in
    ``.mkv``, a container that records no frame count)."""
    import av

    path = Path(path)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = {"png": "rgb24", "ffv1": "bgr0"}.get(codec, "yuv444p")
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.asarray(frame), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
