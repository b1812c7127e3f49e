"""Deterministic test pictures."""

from __future__ import annotations

import torch
from PIL import Image, ImageDraw


def drawn_image(width: int, height: int, seed: int) -> Image.Image:
    """A deterministic picture (sides multiples of 32, so the official resize keeps it as is)."""
    generator = torch.Generator().manual_seed(seed)
    colors = (torch.rand(4, 3, generator=generator) * 255).int().tolist()
    image = Image.new("RGB", (width, height), tuple(colors[0]))
    draw = ImageDraw.Draw(image)
    for i, color in enumerate(colors[1:]):
        x0, y0 = (i * 13) % (width // 2), (i * 7) % (height // 2)
        draw.ellipse([x0, y0, x0 + width // 2, y0 + height // 2], fill=tuple(color))
    return image
