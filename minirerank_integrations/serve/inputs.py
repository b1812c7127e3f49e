"""Wire items to engine inputs, with this service's limits: an image is a data: URI (decoded here, its header's
pixel count checked) or an http(s) URL whose host is allowed (fetched later by the engine, through the guarded
fetcher); never a server path. Every refusal names the field at fault, e.g. ``documents[3].content[1]``."""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from .. import Candidate, Query
from .errors import ServeError
from .protocol import Content, ImagePart, Item, TextItem, TextPart, VideoPart
from .settings import ServeSettings
from .urls import URLPolicy, URLRefused


@dataclass(frozen=True)
class Side:
    """One converted item: its text (None when it has none) and its images (bytes or URLs)."""

    text: str | None
    images: tuple[bytes | str, ...]


def convert(item: Item, field: str, settings: ServeSettings, policy: URLPolicy) -> Side:
    """The engine's view of ``item``; :class:`ServeError` 422 naming ``field`` when a limit refuses it."""
    if isinstance(item, str):
        return Side(item, ())
    if isinstance(item, TextItem):
        return Side(item.text, ())
    assert isinstance(item, Content)
    texts: list[str] = []
    images: list[bytes | str] = []
    for number, part in enumerate(item.content):
        where = f"{field}.content[{number}]"
        if isinstance(part, TextPart):
            texts.append(part.text)
        elif isinstance(part, VideoPart):
            raise ServeError(422, f"{where}: video_url parts are not supported; send frames as image_url", param=where)
        elif isinstance(part, ImagePart):
            if len(images) == settings.max_images_per_item:
                raise ServeError(
                    422,
                    f"{field}: more than {settings.max_images_per_item} images (--max-images-per-item)",
                    param=field,
                )
            images.append(_image(part.image_url.url, f"{where}.image_url.url", settings, policy))
    return Side("\n".join(texts) if texts else None, tuple(images))


def as_query(side: Side) -> Query:
    return Query(text=side.text, images=side.images)


def as_candidate(side: Side) -> Candidate:
    return Candidate(text=side.text, images=side.images)


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
        header, comma, payload = text.partition(",")
        if not comma or ";base64" not in header.lower():
            raise ServeError(422, f"{where}: a data: URI must be base64 ('data:image/png;base64,...')", param=where)
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ServeError(422, f"{where}: the data: URI's base64 is invalid ({exc})", param=where) from exc
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
