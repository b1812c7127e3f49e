"""Reading what a caller names as an image or video source: file paths and ``file://`` URIs (regular files
only, size-capped), http(s) URLs (only through a caller's fetcher), ``data:`` URIs and base64 text, and the
short names errors give sources. Images (:mod:`.images`) and videos (:mod:`.video`) share these rules; each
passes its own error type (``ImageLoadError`` or ``VideoLoadError``) and the word for what it reads.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
from collections.abc import Callable
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from PIL import Image

from ..errors import ImageLoadError, InputError
from .inputs import PdfPage

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_FILE_BYTES",
    "MAX_PATH_CHARS",
    "MAX_SOURCE_PIXELS",
    "URL_SCHEME",
    "Fetcher",
    "b64decode_text",
    "data_uri_bytes",
    "describe_source",
    "fetch_source",
    "file_uri_path",
    "looks_like_path",
    "read_source_file",
    "unwrapped_base64",
]

#: Caller-supplied downloader: given an http(s) URL, returns the encoded bytes (an image's or a video's).
#: The library never opens network connections itself.
Fetcher = Callable[[str], bytes]

#: Decompression-bomb guard: an encoded image whose header declares more than 64 million pixels
#: (e.g. 8000 x 8000) is refused before any pixel is decoded. Decoded as RGB that is already ~256 MB,
#: far above anything the model uses (at most DEFAULT_MAX_PIXELS, ~1.8 M pixels, after resizing).
MAX_SOURCE_PIXELS = 64_000_000

#: Largest image file read from disk (bytes). Four bytes per pixel of MAX_SOURCE_PIXELS covers an
#: uncompressed RGBA bitmap at the pixel limit; anything larger would be refused after decoding anyway, and
#: the cap keeps a sparse file, or one that grows while it is read, from filling memory.
MAX_FILE_BYTES = 4 * MAX_SOURCE_PIXELS

#: File name endings read as images: the one rule for every reader of documents (a folder's image files, an
#: image named in a JSONL record or a framework's metadata). Compared lowercased.
IMAGE_SUFFIXES = (
    ".png",
    ".jpg",
    ".jpeg",
    ".gif",
    ".bmp",
    ".webp",
    ".tif",
    ".tiff",
    ".ico",
    ".ppm",
    ".pgm",
    ".pbm",
    ".avif",
    ".heic",
    ".jfif",
)

URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
#: Longer strings cannot be file names on any common file system; skip the stat call for them.
MAX_PATH_CHARS = 4096
# Longest text still shown verbatim in messages; longer text is summarised (it is likely base64).
_MAX_SHOWN_CHARS = 260
# Text this short is shown verbatim whatever it is; it cannot flood a message.
_SHORT_TEXT_CHARS = 64
_BYTES_REPR = re.compile(r"""^b(['"])(.*)\1$""", re.DOTALL)  # str(b"...") of base64 bytes


def describe_source(source: object) -> str:
    """A short human-readable name for ``source`` in error messages; never dumps a long base64 string."""
    if isinstance(source, Image.Image):
        return f"<PIL {source.width}x{source.height}>"
    if isinstance(source, PdfPage):
        return shorten(str(source))
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<bytes {len(source)}>"
    if isinstance(source, os.PathLike):
        try:
            return shorten(repr(os.fsdecode(os.fspath(source))))
        except (TypeError, ValueError):
            return f"<{type(source).__name__}>"
    if isinstance(source, str):
        # Shown as given (repr): a trailing newline or space in a path is the likely reason it is missing.
        text = source.strip()
        if text[:5].lower() == "data:":
            mime = text[5:].split(",", 1)[0].split(";", 1)[0].strip()[:50] or "no type"
            return f"<data URI {mime}, {len(source)} chars>"
        if URL_SCHEME.match(text) or len(text) <= _SHORT_TEXT_CHARS:
            return shorten(repr(source))
        if len(text) <= _MAX_SHOWN_CHARS and looks_like_path(text):
            return repr(source)
        return f"<base64 {len(source)} chars>"
    if isinstance(source, (list, tuple)):
        return f"<{len(source)} frames>"
    return f"<{type(source).__name__}>"


def shorten(text: str) -> str:
    """``text`` cut to a length a message can show."""
    return text if len(text) <= _MAX_SHOWN_CHARS else text[: _MAX_SHOWN_CHARS - 3] + "..."


def looks_like_path(text: str) -> bool:
    """Whether ``text`` reads as a file path (a separator, or an image file's ending)."""
    # Only consulted once the text is not a readable file; base64 also uses '/', so callers try base64
    # before concluding a path is missing.
    return "/" in text or "\\" in text or os.sep in text or text.lower().endswith(IMAGE_SUFFIXES)


def unwrapped_base64(text: str) -> str:
    """``text`` without a ``b'...'`` wrapper (what ``str()`` of base64 bytes gives)."""
    match = _BYTES_REPR.match(text)
    return match.group(2) if match else text


def b64decode_text(text: str) -> bytes | None:
    """Standard or URL-safe base64 (line breaks and a ``b'...'`` wrapper allowed), or None."""
    compact = "".join(unwrapped_base64(text.strip()).split())  # base64 text is often wrapped at 76 columns
    # str(b"...") writes line breaks as the two characters backslash-n
    compact = compact.replace("\\n", "")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        pass
    if "-" in compact or "_" in compact:
        try:
            padded = compact + "=" * (-len(compact) % 4)
            return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            return None
    return None


def fetch_source(
    url: str,
    desc: str,
    fetcher: Fetcher | None,
    *,
    max_bytes: int = MAX_FILE_BYTES,
    error: type[InputError] = ImageLoadError,
    kind: str = "image",
) -> bytes:
    """The encoded bytes at an http(s) URL through ``fetcher``; ``desc`` names the source in errors.

    Raises ``error`` when there is no fetcher, it fails, it returns something else than bytes, or more than
    ``max_bytes`` of them. The fetcher is the caller's ``image_fetcher=``, whatever ``kind`` it reads.
    """
    if fetcher is None:
        raise error(
            f"{desc}: URLs are not fetched by default; pass image_fetcher= (a callable taking the URL "
            f"and returning the {kind} bytes), or pass the bytes or a local path instead"
        )
    try:
        data = fetcher(url)
    except Exception as exc:
        raise error(f"{desc}: the image fetcher failed on {url}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise error(f"{desc}: the image fetcher returned {type(data).__name__} for {url}, expected bytes")
    if len(data) > max_bytes:
        raise error(
            f"{desc}: the image fetcher returned {len(data)} bytes for {url}, more than {max_bytes} bytes allowed"
        )
    return bytes(data)


def data_uri_bytes(uri: str, desc: str, *, error: type[InputError] = ImageLoadError, kind: str = "image") -> bytes:
    """The bytes a ``data:<kind>/...;base64,`` URI carries; ``error`` for a malformed one or another media type."""
    header, comma, payload = uri[5:].partition(",")
    params = [part.strip().lower() for part in header.split(";")]
    mime = params[0]
    if not comma or "base64" not in params[1:]:
        raise error(f"{desc}: a data URI must look like data:{kind}/<type>;base64,<payload>")
    if not mime.startswith(f"{kind}/"):
        raise error(f"{desc}: data URI media type {mime or '(none)'!r} is not {_a(kind)} type")
    data = b64decode_text(unquote(payload) if "%" in payload else payload)
    if data is None:
        raise error(f"{desc}: data URI payload is not valid base64")
    return data


def file_uri_path(uri: str, desc: str, *, error: type[InputError] = ImageLoadError) -> str:
    """The local path a ``file://`` URI names; ``error`` for one on a remote host."""
    parsed = urlparse(uri)
    if parsed.netloc not in ("", "localhost"):
        raise error(f"{desc}: file URI on a remote host {parsed.netloc!r} is not supported")
    return url2pathname(parsed.path)


# Bytes read per system call; a file is read in chunks so that the cap also holds for one that grows.
_READ_CHUNK = 1 << 20
#: Never block: a FIFO opened for reading waits for a writer without it. No controlling terminal either,
#: should a terminal device be swapped in between the check and the open.
OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)


def _a(kind: str) -> str:
    """``kind`` with its article: "an image", "a video"."""
    return ("an " if kind[:1] in "aeiou" else "a ") + kind


def _file_kind(mode: int) -> str:
    """What a non-regular file is, in words, for messages."""
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def read_source_file(
    path: str,
    desc: str,
    max_file_bytes: int = MAX_FILE_BYTES,
    *,
    error: type[InputError] = ImageLoadError,
    kind: str = "image",
) -> bytes:
    """The bytes of the regular file at ``path``, at most ``max_file_bytes`` of them.

    Only regular files are read: a FIFO would block the call and a device (``/dev/zero``,
    ``/dev/urandom``) never ends, so their type is checked before opening (opening some devices acts on
    them) and again on the open descriptor (the path may have changed in between). The size is checked
    from the metadata and again while reading, in chunks, for files that grow or report no size.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError as exc:
        raise error(f"{desc}: no such file") from exc
    except (OSError, ValueError) as exc:  # ValueError: an embedded NUL character
        raise error(f"{desc}: cannot read the file: {exc}") from exc
    _check_regular(info, desc, max_file_bytes, error, kind)
    try:
        descriptor = os.open(path, OPEN_FLAGS)
    except OSError as exc:
        raise error(f"{desc}: cannot open the file: {exc}") from exc
    try:
        _check_regular(os.fstat(descriptor), desc, max_file_bytes, error, kind)
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(descriptor, min(_READ_CHUNK, max_file_bytes + 1 - total))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            total += len(chunk)
            if total > max_file_bytes:
                raise error(
                    f"{desc}: more than {max_file_bytes} bytes read from the file (it grew, or reports no "
                    f"size); {_a(kind)} file may hold at most that many (max_file_bytes)"
                )
    except OSError as exc:
        raise error(f"{desc}: cannot read the file: {exc}") from exc
    finally:
        os.close(descriptor)


def _check_regular(info: os.stat_result, desc: str, max_file_bytes: int, error: type[InputError], kind: str) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{desc}: {_file_kind(info.st_mode)}, not a regular file; only {kind} files are read")
    if info.st_size > max_file_bytes:
        raise error(
            f"{desc}: the file holds {info.st_size} bytes, more than the {max_file_bytes} {_a(kind)} file may "
            "hold (max_file_bytes); refusing to read it"
        )
