"""Turn any accepted image source into an RGB PIL image, sized as the official Qwen3-VL pipeline does.

Every failure raises :class:`~minirerank_integrations.errors.ImageLoadError` with a message that names
the source (see :func:`describe_source`), so a bad candidate can be found and reported.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import math
import os
import struct

from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageLoadError
from .inputs import ImageSource, PdfPage
from .pdf import parse_page_reference, render_page
from .sources import (
    IMAGE_SUFFIXES,
    MAX_FILE_BYTES,
    MAX_PATH_CHARS,
    MAX_SOURCE_PIXELS,
    URL_SCHEME,
    Fetcher,
    b64decode_text,
    data_uri_bytes,
    describe_source,
    fetch_source,
    file_uri_path,
    looks_like_path,
    read_source_file,
    unwrapped_base64,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MIN_PIXELS",
    "MAX_ASPECT_RATIO",
    "MAX_FILE_BYTES",
    "MAX_SOURCE_PIXELS",
    "ImageFetcher",
    "describe_source",
    "image_digest",
    "is_image_string",
    "load_image",
    "prepare_image",
    "read_image_file",
    "smart_resize",
]

#: Caller-supplied downloader: given an http(s) URL, returns the encoded image bytes.
#: The library never opens network connections itself.
ImageFetcher = Fetcher

#: Pixel bounds of the official Qwen3-VL-Reranker preprocessing (32 = patch size 16 x spatial merge 2).
DEFAULT_MIN_PIXELS = 4 * 32 * 32
DEFAULT_MAX_PIXELS = 1800 * 32 * 32

#: qwen-vl-utils refuses images more elongated than this; the resize rule degenerates beyond it.
MAX_ASPECT_RATIO = 200


def is_image_file(path: str | os.PathLike[str], media_type: object = None) -> bool:
    """Whether ``path`` names an image file: its ending is one of :data:`IMAGE_SUFFIXES`, or ``media_type`` (a
    reader's record of the file's type, such as LlamaIndex's ``file_type``) is ``image/*``."""
    if isinstance(media_type, str) and media_type.lower().startswith("image/"):
        return True
    return os.fspath(path).lower().endswith(IMAGE_SUFFIXES)


# What PIL raises for unreadable, truncated or malformed data. EOFError and struct.error come from
# some plugins on truncated headers.
_PIL_ERRORS: tuple[type[BaseException], ...] = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    Image.DecompressionBombError,
)


def load_image(
    source: ImageSource,
    *,
    fetcher: ImageFetcher | None = None,
    max_source_pixels: int = MAX_SOURCE_PIXELS,
    max_file_bytes: int = MAX_FILE_BYTES,
) -> Image.Image:
    """Decode any accepted source into an RGB PIL image.

    Accepted: a PIL image (copied, never modified), encoded image bytes, a file path (``str`` or
    ``os.PathLike``) or ``file://`` URI, an http(s) URL (read only through ``fetcher``), a
    ``data:image/...;base64,`` URI, plain base64 text, or a PDF page (:class:`PdfPage`, or a path ending
    in ``.pdf#page=N``, rendered by :mod:`.pdf`). Encoded images are checked against
    ``max_source_pixels`` before decoding, use their first frame, and have EXIF orientation applied.
    Transparent images are composited on white.

    Only regular files are read (a FIFO, socket, directory or device such as ``/dev/zero`` is refused
    without blocking or reading it), and at most ``max_file_bytes`` of them; fetched bytes obey the same cap.

    Raises:
        ImageLoadError: the source cannot be read or decoded; the message names the source.
    """
    if max_source_pixels <= 0:
        raise ValueError(f"max_source_pixels must be positive, got {max_source_pixels}")
    if max_file_bytes <= 0:
        raise ValueError(f"max_file_bytes must be positive, got {max_file_bytes}")
    desc = describe_source(source)
    if isinstance(source, Image.Image):
        try:
            # A caller's image is used as is (current frame, no EXIF rotation): it is already decoded.
            return _to_rgb(source)
        except _PIL_ERRORS as exc:
            raise ImageLoadError(f"{desc}: cannot convert the PIL image to RGB: {exc}") from exc
    if isinstance(source, PdfPage):
        return render_page(source, max_source_pixels=max_source_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode(bytes(source), desc, max_source_pixels)
    if isinstance(source, os.PathLike):
        try:
            path = os.fsdecode(os.fspath(source))
        except (TypeError, ValueError) as exc:
            raise ImageLoadError(f"{desc}: not a usable file path: {exc}") from exc
        return _decode(read_source_file(path, desc, max_file_bytes), desc, max_source_pixels)
    if isinstance(source, str):
        return _load_str(source, desc, fetcher, max_source_pixels, max_file_bytes)
    raise ImageLoadError(
        f"{desc}: unsupported image source type {type(source).__name__}; pass a file path, URL, "
        "bytes, base64 text or a PIL image"
    )


def read_image_file(path: str | os.PathLike, *, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The encoded bytes of the image file at ``path``, read as :func:`load_image` reads files.

    For code that ships files elsewhere (a client sending them to a server): only a regular file is read,
    opened without blocking, at most ``max_bytes`` of it.

    Raises:
        ImageLoadError: the file is missing, not a regular file (a FIFO, socket, directory or device),
            larger than ``max_bytes``, or unreadable; the message names the file and why.
    """
    desc = describe_source(path)
    try:
        name = os.fsdecode(os.fspath(path))
    except (TypeError, ValueError) as exc:
        raise ImageLoadError(f"{desc}: not a usable file path: {exc}") from exc
    return read_source_file(name, desc, max_bytes)


def smart_resize(
    height: int,
    width: int,
    *,
    factor: int = 32,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[int, int]:
    """The qwen-vl-utils resize rule: ``(h, w)`` multiples of ``factor``, pixel count in the bounds.

    Each side is rounded to the nearest multiple of ``factor`` (at least ``factor``); when the area
    then exceeds ``max_pixels`` both sides shrink by the same ratio (rounded down), and when it is
    below ``min_pixels`` both grow (rounded up), which keeps the aspect ratio close to the original.

    Raises:
        ValueError: ``min_pixels > max_pixels`` or a non-positive bound or factor.
        ImageLoadError: a non-positive side, or an aspect ratio above ``MAX_ASPECT_RATIO``.
    """
    if factor <= 0 or min_pixels <= 0 or max_pixels <= 0:
        raise ValueError(
            f"factor, min_pixels and max_pixels must be positive, got {factor}, {min_pixels}, {max_pixels}"
        )
    if min_pixels > max_pixels:
        raise ValueError(f"min_pixels ({min_pixels}) must not exceed max_pixels ({max_pixels})")
    if height <= 0 or width <= 0:
        raise ImageLoadError(f"image size must be positive, got {height}x{width} (h x w)")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ImageLoadError(
            f"image aspect ratio {max(height, width) / min(height, width):.1f} ({height}x{width}, h x w) "
            f"exceeds {MAX_ASPECT_RATIO}"
        )
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def prepare_image(
    source: ImageSource,
    *,
    fetcher: ImageFetcher | None = None,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """load_image + resize to smart_resize's (h, w) with bicubic.

    This is what the official pipeline does before handing images to the processor.

    Raises:
        ImageLoadError: as :func:`load_image`, or an unusable aspect ratio.
    """
    image = load_image(source, fetcher=fetcher)
    try:
        height, width = smart_resize(image.height, image.width, min_pixels=min_pixels, max_pixels=max_pixels)
    except ImageLoadError as exc:
        raise ImageLoadError(f"{describe_source(source)}: {exc}") from exc
    if (width, height) != image.size:
        image = image.resize((width, height), Image.Resampling.BICUBIC)
    return image


def image_digest(image: Image.Image) -> str:
    """sha256 hex of mode, size and raw pixel bytes: identifies the decoded content for cache keys."""
    digest = hashlib.sha256()
    # Mode and size go first so equal bytes under a different layout cannot collide.
    digest.update(f"{image.mode}\0{image.width}x{image.height}\0".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


# --- internals -------------------------------------------------------------------------------------------


def _load_str(
    source: str, desc: str, fetcher: ImageFetcher | None, max_source_pixels: int, max_file_bytes: int
) -> Image.Image:
    text = source.strip()
    if not text:
        raise ImageLoadError(f"{desc}: empty string is not an image source")
    lowered = text[:8].lower()
    if lowered.startswith(("http://", "https://")):
        return _decode(fetch_image(text, desc, fetcher, max_bytes=max_file_bytes), desc, max_source_pixels)
    if lowered.startswith("data:"):
        return _decode(data_uri_bytes(text, desc), desc, max_source_pixels)
    if lowered.startswith("file://"):
        return _decode(read_source_file(file_uri_path(text, desc), desc, max_file_bytes), desc, max_source_pixels)
    if URL_SCHEME.match(text):
        scheme = text.split(":", 1)[0]
        raise ImageLoadError(
            f"{desc}: unsupported URL scheme {scheme!r}; only http(s) (through image_fetcher=), "
            "file:// and data: URIs are accepted"
        )
    page = parse_page_reference(text) if len(text) <= MAX_PATH_CHARS else None
    if page is not None:
        return render_page(page, max_source_pixels=max_source_pixels)
    if len(source) <= MAX_PATH_CHARS and os.path.exists(source):
        return _decode(read_source_file(source, desc, max_file_bytes), desc, max_source_pixels)
    payload = b64decode_text(text)
    if payload:
        try:
            return _decode(payload, desc, max_source_pixels)
        except ImageLoadError as exc:
            if exc.__cause__ is None or isinstance(exc.__cause__, Image.DecompressionBombError):
                raise  # size guard: the data is an image, just too large
            if looks_like_path(text):
                raise ImageLoadError(
                    f"{desc}: no such file (and not base64 image data either: {_reason(exc.__cause__)})"
                ) from exc.__cause__
            raise ImageLoadError(
                f"{desc}: neither an existing file nor base64 image data ({_reason(exc.__cause__)})"
            ) from exc.__cause__
    if looks_like_path(text):
        raise ImageLoadError(f"{desc}: no such file")
    raise ImageLoadError(f"{desc}: neither an existing file nor base64 image data")


# Base64 characters decoded to sniff a header: 64 chars -> 48 bytes, enough for every signature below.
_SNIFF_CHARS = 64
# The smallest image of the formats below (a 1x1 GIF) is 35 bytes, i.e. 48 base64 characters.
_MIN_IMAGE_CHARS = 48
# A run this long without spaces, nearly all base64 characters, is image data even when its header is damaged.
_MIN_DAMAGED_CHARS = 128
_BASE64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_")
# Sizes of the BMP info headers (BITMAPCOREHEADER .. BITMAPV5HEADER), read at byte 14.
_BMP_INFO_HEADER_SIZES = (12, 16, 40, 52, 56, 64, 108, 124)


def has_image_header(data: bytes) -> bool:
    """Whether ``data`` starts like a PNG, JPEG, GIF, WEBP, BMP or TIFF file."""
    if data.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*")):
        return True
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return True
    if data[:2] == b"BM" and len(data) >= 18:
        return int.from_bytes(data[14:18], "little") in _BMP_INFO_HEADER_SIZES
    return False


def is_image_string(text: str) -> bool:
    """Whether a string given as text (a LangChain ``page_content``, a query) is meant as an image.

    The one rule for "which strings are images": a ``data:image/...`` URI; or base64 (standard or
    URL-safe, wrapped at any width, or written as Python's ``str(b"...")`` of the base64 bytes) whose first
    bytes are a PNG, JPEG, GIF, WEBP, BMP or TIFF signature; or at least 128 characters without spaces of
    which 97% or more are base64 characters (image data with a damaged header, so that it is reported as
    an unreadable image instead of scored as text). Everything else is text. Decoding is
    :func:`load_image`'s job: an image string that does not decode raises :class:`ImageLoadError`.
    """
    if not isinstance(text, str):
        return False
    stripped = text.strip()
    if stripped[:11].lower() == "data:image/":
        return True
    body = unwrapped_base64(stripped)
    if len(body) < _MIN_IMAGE_CHARS:
        return False
    head = "".join(body[: 2 * _SNIFF_CHARS].split())[:_SNIFF_CHARS]
    head = head[: len(head) // 4 * 4]
    for alphabet in ("+/", "-_"):  # standard, then URL-safe
        try:
            if has_image_header(base64.b64decode(head, altchars=alphabet, validate=True)):
                return True
        except (binascii.Error, ValueError):
            continue
    compact = "".join(body.split("\n"))
    if len(compact) < _MIN_DAMAGED_CHARS or any(c.isspace() for c in compact):
        return False
    return sum(c in _BASE64_CHARS for c in compact) >= 0.97 * len(compact)


def encoded_image_bytes(text: str, desc: str) -> bytes | None:
    """The encoded image a ``data:`` URI or base64 text carries (what :func:`load_image` decodes), or None when
    ``text`` is not base64; a malformed data URI is :class:`ImageLoadError`."""
    stripped = text.strip()
    if stripped[:5].lower() == "data:":
        return data_uri_bytes(stripped, desc)
    return b64decode_text(stripped) or None


def _reason(error: BaseException) -> str:
    # PIL's UnidentifiedImageError names its BytesIO buffer ("<_io.BytesIO object at 0x...>"), not the source.
    return "unrecognized image format" if isinstance(error, UnidentifiedImageError) else str(error)


def fetch_image(url: str, desc: str, fetcher: ImageFetcher | None, *, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The encoded bytes of an http(s) image through ``fetcher``; ``desc`` names the source in errors.

    Raises :class:`ImageLoadError` when there is no fetcher, it fails, it returns something else than
    bytes, or more than ``max_bytes`` of them (the cap on image files).
    """
    return fetch_source(url, desc, fetcher, max_bytes=max_bytes)


def _decode(data: bytes, desc: str, max_source_pixels: int) -> Image.Image:
    """Decode encoded image bytes; errors without a ``__cause__`` are the size guard's own."""
    if not data:
        raise ImageLoadError(f"{desc}: empty image data (0 bytes)")
    if data.startswith(b"%PDF-"):
        raise ImageLoadError(
            f"{desc}: a PDF holds pages, not one image; name a page as 'file.pdf#page=N' (from 1) or "
            "PdfPage(path, index=i) (from 0)"
        )
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        # PIL's own open-time guard fires first for extreme sizes (twice its global limit).
        raise ImageLoadError(
            f"{desc}: image is too large to decode safely (limit {max_source_pixels} pixels): {exc}"
        ) from exc
    except UnidentifiedImageError as exc:  # PIL's message names its BytesIO buffer, not the source
        raise ImageLoadError(f"{desc}: not a decodable image: unrecognized image format") from exc
    except _PIL_ERRORS as exc:
        raise ImageLoadError(f"{desc}: not a decodable image: {exc}") from exc
    with image:
        width, height = image.size
        # Image.open only parsed the header; refusing here means the pixels are never allocated.
        if width * height > max_source_pixels:
            raise ImageLoadError(
                f"{desc}: image declares {width}x{height} = {width * height} pixels, more than the "
                f"{max_source_pixels} allowed (max_source_pixels); refusing to decode it"
            )
        try:
            image.load()  # first frame: Image.open leaves multi-frame files positioned on frame 0
            upright = ImageOps.exif_transpose(image)
            return _to_rgb(upright)
        except _PIL_ERRORS as exc:
            raise ImageLoadError(f"{desc}: not a decodable image: {exc}") from exc


def _to_rgb(image: Image.Image) -> Image.Image:
    """A new RGB image; transparent pixels become white."""
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        # A plain convert("RGB") drops alpha and exposes whatever colour the transparent pixels store
        # (often black); the official pipeline pastes on white, so scores match it and the render.
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return image.convert("RGB")  # always a new image, even when the mode is already RGB
