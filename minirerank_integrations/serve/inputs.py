"""Wire items to engine inputs, with this service's limits: an image is a data: URI (decoded here, its header's
pixel count checked) or an http(s) URL whose host is allowed (fetched later by the engine, through the guarded
fetcher); a video is a data: URI (decoded here) or an http(s) URL fetched here under the same URL policy (so the
engine gets its bytes; its frame and pixel budgets are the engine's to check); never a server path. Every refusal
names the field at fault, e.g. ``documents[3].content[1]``."""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from .. import Candidate, Query
from ..errors import MiniRerankError
from .errors import ServeError
from .protocol import Content, ImagePart, Item, TextItem, TextPart, VideoPart
from .settings import ServeSettings
from .urls import URLPolicy, URLRefused

_DATA_URI_HINT = {"image": "data:image/png;base64,...", "video": "data:video/mp4;base64,..."}


@dataclass(frozen=True)
class Side:
    """One converted item: its text (None when it has none), its images (bytes or URLs) and its videos (bytes)."""

    text: str | None
    images: tuple[bytes | str, ...]
    videos: tuple[bytes, ...] = ()


def convert(item: Item, field: str, settings: ServeSettings, policy: URLPolicy) -> Side:
    """The engine's view of ``item``; :class:`ServeError` 422 naming ``field`` when a limit refuses it."""
    if isinstance(item, str):
        return Side(item, ())
    if isinstance(item, TextItem):
        return Side(item.text, ())
    assert isinstance(item, Content)
    texts: list[str] = []
    images: list[bytes | str] = []
    videos: list[bytes] = []
    for number, part in enumerate(item.content):
        where = f"{field}.content[{number}]"
        if isinstance(part, TextPart):
            texts.append(part.text)
        elif isinstance(part, VideoPart):
            if len(videos) == settings.max_images_per_item:
                raise ServeError(
                    422,
                    f"{field}: more than {settings.max_images_per_item} videos (--max-images-per-item)",
                    param=field,
                )
            videos.append(_video(part.video_url.url, f"{where}.video_url.url", policy))
        elif isinstance(part, ImagePart):
            if len(images) == settings.max_images_per_item:
                raise ServeError(
                    422,
                    f"{field}: more than {settings.max_images_per_item} images (--max-images-per-item)",
                    param=field,
                )
            images.append(_image(part.image_url.url, f"{where}.image_url.url", settings, policy))
    return Side("\n".join(texts) if texts else None, tuple(images), tuple(videos))


def as_query(side: Side) -> Query:
    return Query(text=side.text, images=side.images, videos=side.videos)


def as_candidate(side: Side) -> Candidate:
    return Candidate(text=side.text, images=side.images, videos=side.videos)


def check_pixels(data: bytes, what: str, limit: int) -> None:
    """Refuse an encoded image whose header declares more than ``limit`` pixels, before decoding any of them."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{what} is not a readable image ({type(exc).__name__}: {exc})") from exc
    if width * height > limit:
        raise ValueError(
            f"{what} is {width}x{height} = {width * height} pixels, over the limit of {limit} (--max-image-pixels)"
        )


def _image(url: str, where: str, settings: ServeSettings, policy: URLPolicy) -> bytes | str:
    text = url.strip()
    if text[:5].lower() == "data:":
        data = _data_uri_bytes(text, where, "image")
        try:
            check_pixels(data, "the image", settings.max_image_pixels)
        except ValueError as exc:
            raise ServeError(422, f"{where}: {exc}", param=where) from exc
        return data
    try:
        policy.check_host(text)
    except URLRefused as exc:
        raise ServeError(422, f"{where}: {exc}", param=where, kind="url_refused") from exc
    return text


def _video(url: str, where: str, policy: URLPolicy) -> bytes:
    """A video part's file bytes: a data: URI decoded, or an allowed http(s) URL fetched now (on the request's
    conversion thread) under the image URLs' policy: host allowlist, no non-global address, size and time limits."""
    text = url.strip()
    if text[:5].lower() == "data:":
        return _data_uri_bytes(text, where, "video")
    try:
        policy.check_host(text)
        return policy.fetch(text)
    except URLRefused as exc:
        raise ServeError(422, f"{where}: {exc}", param=where, kind="url_refused") from exc
    except MiniRerankError as exc:  # the download failed (status, size, redirects)
        raise ServeError(422, f"{where}: the video could not be fetched: {exc}", param=where) from exc


def _data_uri_bytes(text: str, where: str, kind: str) -> bytes:
    header, comma, payload = text.partition(",")
    if not comma or ";base64" not in header.lower():
        raise ServeError(422, f"{where}: a data: URI must be base64 ('{_DATA_URI_HINT[kind]}')", param=where)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ServeError(422, f"{where}: the data: URI's base64 is invalid ({exc})", param=where) from exc
    if not data:
        raise ServeError(422, f"{where}: the data: URI holds no {kind} (0 bytes)", param=where)
    return data
