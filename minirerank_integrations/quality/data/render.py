"""PIL drawing of the synthetic inputs: scenes of coloured shapes, document or app screenshots, and short clips
of one shape moving across a still background.

Everything drawn here is decided by an attribute set plus a ``random.Random`` for the small variations
(placement, sizes, background, filler words), so equal attributes and equal random state give equal pixels.
Shapes are large and colours few and saturated on purpose: a tiny vision encoder sees 32 x 32 pixel
patches and barely registers a small or pale shape.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Mapping

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "COLOURS",
    "COUNTS",
    "DIRECTIONS",
    "LAYOUTS",
    "POSITIONS",
    "SHAPES",
    "TITLES",
    "render_clip",
    "render_document",
    "render_scene",
]

#: Six saturated colours, far apart in RGB and from the pale backgrounds.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 35),
    "green": (30, 165, 55),
    "blue": (35, 75, 220),
    "yellow": (240, 205, 20),
    "purple": (135, 40, 185),
    "orange": (250, 125, 10),
}
SHAPES = ("circle", "square", "triangle", "cross")
#: Two at most: two shapes of 17-23 % of the image each fill one half of it; three would be too small.
COUNTS = ("one", "two")
POSITIONS = ("left", "right", "top", "bottom")
#: Directions a clip's shape moves in; a clip and its reverse show the same frames in opposite order, so only
#: the frames' order tells "left" from "right".
DIRECTIONS = ("left", "right", "up", "down")

#: Page titles: short words that fit the header bar in the default font at 96 px width.
TITLES = (
    "Harbor",
    "Garden",
    "Invoice",
    "Recipe",
    "Travel",
    "Music",
    "Weather",
    "Budget",
    "School",
    "Sports",
    "Cinema",
    "Clinic",
)
#: Two page layouts (text columns) and two app-screen layouts (tiles, rows with icons).
LAYOUTS = ("single-column", "two-column", "grid", "list")

_BACKGROUNDS = ((236, 236, 226), (224, 234, 242), (242, 233, 220), (228, 240, 228), (236, 230, 240))
_FILLER_WORDS = (
    "the", "and", "for", "with", "note", "date", "total", "item", "open", "view", "team", "plan",
    "city", "book", "time", "list", "page", "call", "home", "news", "shop", "data", "map", "help",
)  # fmt: skip
#: Header colours on which black text reads better than white.
_LIGHT_HEADERS = {"yellow", "orange"}


def render_scene(attributes: Mapping[str, str], rng: random.Random, size: int = 96) -> Image.Image:
    """A ``size`` x ``size`` RGB scene: ``count`` shapes of one ``colour`` and ``shape`` in the ``position`` half.

    Each shape's bounding box covers about 17-25 % of the image; the background is a pale, slightly noisy
    gradient so that images look less like flat test patterns.
    """
    colour = COLOURS[attributes["colour"]]
    shape, count, position = attributes["shape"], COUNTS.index(attributes["count"]) + 1, attributes["position"]
    image = _background(rng, (size, size))
    draw = ImageDraw.Draw(image)
    half = size / 2
    region = {
        "left": (0.0, 0.0, half, float(size)),
        "right": (half, 0.0, float(size), float(size)),
        "top": (0.0, 0.0, float(size), half),
        "bottom": (0.0, half, float(size), float(size)),
    }[position]
    if count == 1:
        cells = [region]
        side_range = (0.44, 0.50)
    else:
        x0, y0, x1, y1 = region
        # Two shapes share the half along its long side: stacked for left/right, side by side for top/bottom.
        if position in ("left", "right"):
            cells = [(x0, y0, x1, y0 + half), (x0, y0 + half, x1, y1)]
        else:
            cells = [(x0, y0, x0 + half, y1), (x0 + half, y0, x1, y1)]
        side_range = (0.41, 0.48)
    for cell in cells:
        side = rng.uniform(*side_range) * size
        box = _place(cell, side, rng)
        _draw_shape(draw, shape, box, _jitter_colour(colour, rng))
    return image


def render_document(attributes: Mapping[str, str], rng: random.Random, size: int = 96) -> Image.Image:
    """A portrait screenshot, ``size`` wide and 4/3 as tall: a ``header`` colour bar with the ``title``, and a body
    in the given ``layout`` (text columns, tiles or icon rows)."""
    width, height = size, round(size * 4 / 3)
    shade = rng.randint(246, 255)
    image = Image.new("RGB", (width, height), (shade, shade, shade))
    draw = ImageDraw.Draw(image)

    header_height = round(rng.uniform(0.20, 0.25) * height)
    draw.rectangle((0, 0, width - 1, header_height - 1), fill=_jitter_colour(COLOURS[attributes["header"]], rng))
    title = attributes["title"]
    font = _fitting_font(title, width - 8, max(10, round(size * 0.16)))
    left, top, right, bottom = draw.textbbox((0, 0), title, font=font)
    x = rng.randint(3, max(3, int(width - (right - left) - 4)))  # textbbox's stubs say float; it gives ints
    y = (header_height - (bottom - top)) // 2 - top
    text_colour = (20, 20, 20) if attributes["header"] in _LIGHT_HEADERS else (255, 255, 255)
    draw.text((x, y), title, font=font, fill=text_colour)

    body = (4, header_height + 5, width - 4, height - 4)
    layout = attributes["layout"]
    small = _font(max(8, size // 12))
    if layout == "single-column":
        _text_lines(draw, body, small, rng)
    elif layout == "two-column":
        x0, y0, x1, y1 = body
        middle = (x0 + x1) // 2
        _text_lines(draw, (x0, y0, middle - 3, y1), small, rng)
        _text_lines(draw, (middle + 3, y0, x1, y1), small, rng)
    elif layout == "grid":
        _tiles(draw, body, rng)
    elif layout == "list":
        _icon_rows(draw, body, small, rng)
    else:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    return image


def render_clip(
    attributes: Mapping[str, str], rng: random.Random, size: int = 96, frames: int = 4
) -> list[Image.Image]:
    """``frames`` RGB frames of ``size`` x ``size``: one ``colour`` ``shape`` crossing a still background in
    ``direction``, by equal steps from one side to the other.

    The shape's side is 36-42 % of the frame and it travels about half the frame in all, so at 96 pixels each
    step (about 18 pixels for 4 frames) moves it by half a 32-pixel merged patch. Path offsets across the
    motion, the background and the colour jitter vary with ``rng``; every frame shares them.
    """
    if frames < 2:
        raise ValueError(f"a clip needs at least 2 frames, got {frames}")
    colour = _jitter_colour(COLOURS[attributes["colour"]], rng)
    shape, direction = attributes["shape"], attributes["direction"]
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; expected one of {DIRECTIONS}")
    background = _background(rng, (size, size))
    side = rng.uniform(0.36, 0.42) * size
    margin = 0.03 * size
    low, high = margin + side / 2, size - margin - side / 2  # centre positions that keep the shape inside
    across = rng.uniform(low, high)  # the fixed coordinate across the motion
    travel = rng.uniform(0.85, 1.0) * (high - low)
    start = rng.uniform(low, high - travel)
    along = [start + travel * k / (frames - 1) for k in range(frames)]  # increasing: moving right or down
    if direction in ("left", "up"):
        along.reverse()
    clip = []
    for position in along:
        cx, cy = (position, across) if direction in ("left", "right") else (across, position)
        frame = background.copy()
        _draw_shape(ImageDraw.Draw(frame), shape, (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2), colour)
        clip.append(frame)
    return clip


# --- internals -------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except ImportError:
        # Pillow without FreeType has only the fixed 11 px bitmap font; the pages stay usable, just smaller text.
        return ImageFont.load_default()


def _fitting_font(text: str, max_width: int, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    while size > 8 and _font(size).getlength(text) > max_width:
        size -= 1
    return _font(size)


def _background(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    width, height = size
    base = np.array(rng.choice(_BACKGROUNDS), dtype=np.float32)  # [3]
    ramp = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None, None] * rng.uniform(4, 12)  # [h, 1, 1]
    noise = np.random.default_rng(rng.getrandbits(64)).normal(0.0, 4.0, (height, width, 3))  # [h, w, 3]
    pixels = np.clip(base[None, None, :] + ramp + noise, 0, 255).astype(np.uint8)  # [h, w, 3]
    return Image.fromarray(pixels, "RGB")


def _place(cell: tuple[float, float, float, float], side: float, rng: random.Random) -> tuple[float, ...]:
    """A square box of ``side`` pixels inside ``cell`` (centred on an axis where it does not fit)."""
    x0, y0, x1, y1 = cell
    cx = rng.uniform(x0 + side / 2, x1 - side / 2) if x1 - x0 > side else (x0 + x1) / 2
    cy = rng.uniform(y0 + side / 2, y1 - side / 2) if y1 - y0 > side else (y0 + y1) / 2
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[float, ...], fill: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
    elif shape == "cross":
        arm = (x1 - x0) / 3
        draw.rectangle((x0 + arm, y0, x1 - arm, y1), fill=fill)
        draw.rectangle((x0, y0 + arm, x1, y1 - arm), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _jitter_colour(colour: tuple[int, int, int], rng: random.Random, amount: int = 12) -> tuple[int, int, int]:
    r, g, b = (min(255, max(0, c + rng.randint(-amount, amount))) for c in colour)
    return (r, g, b)


def _text_lines(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], font, rng: random.Random) -> None:
    x0, y0, x1, y1 = box
    line_height = round(font.size * 1.35) if hasattr(font, "size") else 12
    y = y0
    while y + line_height <= y1:
        words: list[str] = []
        line = ""
        target = rng.uniform(0.6, 1.0) * (x1 - x0)
        while True:
            candidate = " ".join([*words, rng.choice(_FILLER_WORDS)])
            if font.getlength(candidate) > target:
                break
            words, line = candidate.split(" "), candidate
        draw.text((x0, y), line, font=font, fill=(70, 70, 70))
        y += line_height


def _tiles(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], rng: random.Random) -> None:
    x0, y0, x1, y1 = box
    columns, rows, gap = 2, 3, 4
    tile_w = (x1 - x0 - gap * (columns - 1)) / columns
    tile_h = (y1 - y0 - gap * (rows - 1)) / rows
    for row in range(rows):
        for column in range(columns):
            left, top = x0 + column * (tile_w + gap), y0 + row * (tile_h + gap)
            grey = rng.randint(200, 225)
            draw.rounded_rectangle((left, top, left + tile_w, top + tile_h), radius=3, fill=(grey, grey, grey))


def _icon_rows(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], font, rng: random.Random) -> None:
    x0, y0, x1, y1 = box
    row_height = max(14, (y1 - y0) // 5)
    y = y0
    while y + row_height <= y1 + 1:
        icon = row_height - 6
        grey = rng.randint(120, 170)
        draw.ellipse((x0, y + 2, x0 + icon, y + 2 + icon), fill=(grey, grey, grey))
        text = " ".join(rng.choice(_FILLER_WORDS) for _ in range(2))
        draw.text((x0 + icon + 4, y + 2), text, font=font, fill=(70, 70, 70))
        draw.line((x0, y + row_height - 1, x1, y + row_height - 1), fill=(215, 215, 215))
        y += row_height
