"""Images keyed by what they are made of: the source's bytes (xxh3-128) and the resize bounds, not the decoded
pixels, so that a candidate seen before is neither decoded, resized nor hashed again (``docs/design.md``,
"What a prefix key covers").

The first sight of a source decodes it in full (an undecodable image is its candidate's error at preparation,
as always) and records the decoded size under the source's digest. Later sights find that size in the memo and
give a :class:`PreparedImage` whose pixels are decoded only if they are needed (a store miss):

- a file path costs one ``stat``: (path, device, inode, size, mtime_ns, ctime_ns) is remembered with the
  digest of the bytes read, once the file is older than :data:`SETTLE_SECONDS` (a file written within the
  timestamp granularity could change without changing its stamp; such a file is hashed on each sight);
- bytes cost one xxh3 over them; base64 and data URIs a decode and one xxh3 over the bytes they carry, so
  they share the key of a file or bytes of the same image;
- a PDF page is keyed by the file's digest (remembered as a path is), the page and the scale, and is rendered
  only on a miss;
- a PIL image is hashed over its pixels (it may change between calls).

A file whose bytes change gets another stamp, hence another digest and other prefix keys. Pixels decoded
later are checked against the digest the key was made from, and refused (:class:`ImageLoadError`) if the file
changed in between.
"""

from __future__ import annotations

import functools
import os
import re
import stat
import time
from collections.abc import Callable
from urllib.parse import urlparse
from urllib.request import url2pathname

import xxhash
from PIL import Image

from ..errors import ImageLoadError
from ..store.memo import Memo
from .images import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    MAX_FILE_BYTES,
    ImageFetcher,
    describe_source,
    encoded_image_bytes,
    fetch_image,
    load_image,
    read_image_file,
    smart_resize,
)
from .inputs import ImageSource, PdfPage
from .pdf import parse_page_reference

__all__ = [
    "IMAGE_KEY_VERSION",
    "MEMO_ENTRIES",
    "SETTLE_SECONDS",
    "KeyedImage",
    "clear_memo",
    "file_stamp",
    "key_image",
    "settled",
]

#: Part of every image digest; bumped when the decoding or the resize rule changes what a source becomes.
IMAGE_KEY_VERSION = 1
#: Entries each memo holds (file stamps; decoded sizes), least recently used dropped first. An entry is ~200 bytes.
MEMO_ENTRIES = 65_536
#: A file modified less than this long ago is hashed on each sight rather than trusted by its stamp
#: (timestamps are coarser than writes on some file systems: 2 s on FAT, a clock tick on ext4).
SETTLE_SECONDS = 2.0

_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_MAX_PATH_CHARS = 4096  # longer strings are no file names (images.py skips the stat for them too)
_HASH_CHUNK = 1 << 20
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)


_stamps: Memo[object, object] = Memo(MEMO_ENTRIES)  # file stamp -> xxh3-128 of the file's bytes
_sizes: Memo[object, object] = Memo(MEMO_ENTRIES)  # source key -> (width, height) decoded, upright, before the resize


def clear_memo() -> None:
    """Forget every file stamp and decoded size (the next sight of each source decodes it again)."""
    _stamps.clear()
    _sizes.clear()


class KeyedImage:
    """A source's identity and decoded size, with the resized pixels when this sight decoded them."""

    __slots__ = ("digest", "image", "loader", "size")

    def __init__(
        self, digest: str, size: tuple[int, int], image: Image.Image | None, loader: Callable[[], Image.Image]
    ) -> None:
        self.digest = digest  # binds the source, IMAGE_KEY_VERSION and the resize bounds
        self.size = size  # (width, height) after the resize
        self.image = image  # the resized pixels, or None: decode with loader() when needed
        self.loader = loader


def key_image(
    source: ImageSource,
    *,
    fetcher: ImageFetcher | None = None,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    factor: int = 32,
) -> KeyedImage:
    """Key ``source`` for the model: its digest and resized size, decoding only a source not seen before.
    ``factor``: the multiple both sides are rounded to (32; a video's frames are first resized at 64, as
    qwen-vl-utils resizes each frame of a list).

    Raises:
        ImageLoadError: as :func:`~.images.prepare_image` (a source not seen before is decoded here, so an
            unreadable or undecodable image fails at preparation, naming the source).
    """
    desc = describe_source(source)
    kind, value = _locate(source, desc, fetcher)
    if kind == "file":
        return _key_file(value, desc, min_pixels, max_pixels, factor)  # type: ignore[arg-type]
    if kind == "pdf":
        return _key_page(value, desc, min_pixels, max_pixels, factor)  # type: ignore[arg-type]
    if kind == "bytes":
        data: bytes = value  # type: ignore[assignment]
        key = f"c:{xxhash.xxh3_128_hexdigest(data)}"  # as a file of the same bytes
        return _key_content(key, desc, lambda: _decode_as(data, desc), min_pixels, max_pixels, factor)
    if kind == "text":
        text: str = value  # type: ignore[assignment]
        # base64 and data URIs are keyed by the bytes they carry, as a file or bytes of the same image: a page
        # pre-cached from its file is found when a framework sends it as base64 (one decode, ~1 GB/s).
        carried = encoded_image_bytes(text, desc)
        if carried:
            key = f"c:{xxhash.xxh3_128_hexdigest(carried)}"
        else:
            key = f"t:{xxhash.xxh3_128_hexdigest(text.encode('utf-8', 'surrogatepass'))}"
        return _key_content(key, desc, lambda: load_image(text), min_pixels, max_pixels, factor)
    # A PIL image: its pixels are its identity, and it may be changed by its owner between calls.
    upright = load_image(value)  # type: ignore[arg-type]  # a converted copy, never the caller's image
    hasher = xxhash.xxh3_128(f"{upright.mode}\0{upright.width}x{upright.height}\0".encode())
    hasher.update(upright.tobytes())
    return _key_content(f"p:{hasher.hexdigest()}", desc, lambda: upright, min_pixels, max_pixels, factor)


# -- sources ----------------------------------------------------------------------------------------------


def _locate(source: ImageSource, desc: str, fetcher: ImageFetcher | None) -> tuple[str, object]:
    """Where ``source``'s bytes are, following :func:`~.images.load_image`'s rules in its order, without
    reading a file: ("file", path), ("pdf", page), ("bytes", data), ("text", str) or ("pil", image)."""
    if isinstance(source, Image.Image):
        return "pil", source
    if isinstance(source, PdfPage):
        return "pdf", source
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "bytes", bytes(source)
    if isinstance(source, os.PathLike):
        try:
            return "file", os.fsdecode(os.fspath(source))
        except (TypeError, ValueError):
            load_image(source)  # raises, naming the source
    if not isinstance(source, str):
        load_image(source)  # raises: unsupported type
        raise ImageLoadError(f"{desc}: unsupported image source")  # pragma: no cover - load_image raised
    text = source.strip()
    lowered = text[:8].lower()
    if lowered.startswith(("http://", "https://")):
        return "bytes", fetch_image(text, desc, fetcher)
    if lowered.startswith("file://"):
        parsed = urlparse(text)
        if parsed.netloc in ("", "localhost"):
            return "file", url2pathname(parsed.path)
        return "text", source  # load_image refuses a remote host, naming it
    if lowered.startswith("data:") or _URL_SCHEME.match(text) or not text:
        return "text", source  # decoded (or refused) by load_image: the text alone decides
    page = parse_page_reference(text) if len(text) <= _MAX_PATH_CHARS else None
    if page is not None:
        return "pdf", page
    if len(source) <= _MAX_PATH_CHARS and os.path.exists(source):
        return "file", source
    return "text", source  # base64, or a missing file that load_image names


def file_stamp(path: str, info: os.stat_result) -> tuple:
    """What identifies a file's bytes without reading them: path, device, inode, size and both timestamps."""
    return (path, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def settled(info: os.stat_result) -> bool:
    """Whether the file was last written long enough ago that a later write would show in its stamp."""
    newest = max(info.st_mtime_ns, info.st_ctime_ns)
    return time.time_ns() - newest > SETTLE_SECONDS * 1e9


def _key_file(path: str, desc: str, min_pixels: int, max_pixels: int, factor: int) -> KeyedImage:
    try:
        info: os.stat_result | None = os.stat(path)
    except (OSError, ValueError):
        info = None  # read_image_file names the problem
    if info is not None and stat.S_ISREG(info.st_mode):
        digest = _stamps.get(file_stamp(path, info))
        if isinstance(digest, str):
            key = f"c:{digest}"
            size = _sizes.get(key)
            if size is not None:
                decode = functools.partial(_checked_file, path, desc, digest)
                return _lazy(key, desc, size, decode, min_pixels, max_pixels, factor)  # type: ignore[arg-type]
    data = _read_as(path, desc)
    digest = xxhash.xxh3_128_hexdigest(data)
    keyed = _key_content(f"c:{digest}", desc, lambda: _decode_as(data, desc), min_pixels, max_pixels, factor)
    # Remember the stamp only when it describes the bytes just read: unchanged across the read, and old
    # enough that a later write would show in it.
    try:
        after = os.stat(path)
    except (OSError, ValueError):
        return keyed
    if info is not None and file_stamp(path, after) == file_stamp(path, info) and settled(after):
        _stamps.put(file_stamp(path, info), digest)
    return keyed


def _named(exc: ImageLoadError, shown: str, desc: str) -> ImageLoadError:
    """``exc`` naming the caller's source ``desc`` where it named what this module passed on (``shown``)."""
    message = str(exc)
    return ImageLoadError(desc + message[len(shown) :] if message.startswith(shown) else message)


def _read_as(path: str, desc: str) -> bytes:
    try:
        return read_image_file(path, max_bytes=MAX_FILE_BYTES)
    except ImageLoadError as exc:
        raise _named(exc, describe_source(path), desc) from exc.__cause__


def _decode_as(data: bytes, desc: str) -> Image.Image:
    try:
        return load_image(data)
    except ImageLoadError as exc:
        raise _named(exc, describe_source(data), desc) from exc.__cause__


def _checked_file(path: str, desc: str, digest: str) -> Image.Image:
    """The file's image, decoded when a key made earlier from its stamp needs the pixels."""
    data = _read_as(path, desc)
    if xxhash.xxh3_128_hexdigest(data) != digest:
        raise ImageLoadError(f"{desc}: the file changed while it was in use; score it again")
    return _decode_as(data, desc)


def _file_digest(path: str, desc: str) -> str:
    """xxh3-128 of a regular file's bytes, streamed (a PDF may be large), opened without blocking."""
    try:
        descriptor = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError as exc:
        raise ImageLoadError(f"{desc}: no such file") from exc
    except (OSError, ValueError) as exc:
        raise ImageLoadError(f"{desc}: cannot open the file: {exc}") from exc
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise ImageLoadError(f"{desc}: not a regular file; only PDF files are read")
        hasher = xxhash.xxh3_128()
        while chunk := os.read(descriptor, _HASH_CHUNK):
            hasher.update(chunk)
        return hasher.hexdigest()
    except OSError as exc:
        raise ImageLoadError(f"{desc}: cannot read the file: {exc}") from exc
    finally:
        os.close(descriptor)


def _key_page(page: PdfPage, desc: str, min_pixels: int, max_pixels: int, factor: int) -> KeyedImage:
    path = os.fsdecode(os.fspath(page.path))
    try:
        info: os.stat_result | None = os.stat(path)
    except (OSError, ValueError):
        info = None
    if info is not None and not stat.S_ISREG(info.st_mode):
        load_image(page)  # refuses it by type, naming the page
    digest = _stamps.get(file_stamp(path, info)) if info is not None else None
    if digest is None:
        if info is None:
            load_image(page)  # raises: no such file, naming the page
        digest = _file_digest(path, desc)
        after = os.stat(path)
        if file_stamp(path, after) == file_stamp(path, info) and settled(after):  # type: ignore[arg-type]
            _stamps.put(file_stamp(path, info), digest)  # type: ignore[arg-type]
    key = f"d:{digest}:{page.index}:{page.label!r}:{float(page.scale)!r}"

    def render() -> Image.Image:
        image = load_image(page)
        if _file_digest(path, desc) != digest:
            raise ImageLoadError(f"{desc}: the PDF changed while it was in use; score it again")
        return image

    return _key_content(key, desc, render, min_pixels, max_pixels, factor)


# -- digests and sizes ------------------------------------------------------------------------------------


def _digest(key: str, min_pixels: int, max_pixels: int, factor: int) -> str:
    rounding = "" if factor == 32 else f"\0factor {factor}"  # 32 is left out: digests made before stay valid
    text = f"image v{IMAGE_KEY_VERSION}\0{key}\0{min_pixels}\0{max_pixels}{rounding}"
    return xxhash.xxh3_128_hexdigest(text.encode())


def _resized_size(size: tuple[int, int], desc: str, min_pixels: int, max_pixels: int, factor: int) -> tuple[int, int]:
    width, height = size
    try:
        new_height, new_width = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    except ImageLoadError as exc:
        raise ImageLoadError(f"{desc}: {exc}") from exc
    return new_width, new_height


def _resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    # What prepare_image does: bicubic to smart_resize's size, untouched when already there.
    return image if image.size == size else image.resize(size, Image.Resampling.BICUBIC)


def _key_content(
    key: str, desc: str, decode: Callable[[], Image.Image], min_pixels: int, max_pixels: int, factor: int
) -> KeyedImage:
    """Key a source by ``key`` (its kind and content digest); decode it unless its size is already known."""
    size = _sizes.get(key)
    if size is not None:
        return _lazy(key, desc, size, decode, min_pixels, max_pixels, factor)  # type: ignore[arg-type]
    image = decode()
    target = _resized_size(image.size, desc, min_pixels, max_pixels, factor)
    resized = _resize(image, target)
    _sizes.put(key, image.size)  # only once decoded and resizable: a bad source is never remembered
    return KeyedImage(_digest(key, min_pixels, max_pixels, factor), target, resized, lambda: resized)


def _lazy(
    key: str,
    desc: str,
    size: tuple[int, int],
    decode: Callable[[], Image.Image],
    min_pixels: int,
    max_pixels: int,
    factor: int,
) -> KeyedImage:
    target = _resized_size(size, desc, min_pixels, max_pixels, factor)
    return KeyedImage(_digest(key, min_pixels, max_pixels, factor), target, None, lambda: _resize(decode(), target))
