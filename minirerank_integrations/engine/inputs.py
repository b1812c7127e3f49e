"""What a caller passes in: queries and candidates made of text, images and/or videos, and what comes back."""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Literal, Union, cast

from PIL import Image

from ..errors import InputError

#: What a call does with a bad candidate: raise :class:`CandidateError` naming it, or leave it out and list it
#: in ``results.skipped`` (``"skip"`` covers whatever one candidate raises).
OnError = Literal["raise", "skip"]

#: Bounds of ``PdfPage.scale`` (pixels per PDF point): 0.01 is under 1 dpi, 100 is 7200 dpi. The pixel
#: limit of a render (``max_source_pixels``) is checked when the page is rendered, against its real size.
MIN_PDF_SCALE = 0.01
MAX_PDF_SCALE = 100.0


@dataclass(frozen=True)
class PdfPage:
    """One page of a PDF file, rendered to an image when it is scored (needs the ``pdf`` extra, pypdfium2).

    Name the page by ``index`` (counted from 0, as Python counts) or by ``label`` (the page label the PDF
    declares, e.g. ``"iv"``, or the page number counted from 1 when it declares none: what LlamaIndex's
    ``PDFReader`` stores as ``page_label``). The string ``"file.pdf#page=3"`` is the same as
    ``PdfPage("file.pdf", index=2)`` (the PDF open-parameter convention counts from 1).
    """

    path: str | os.PathLike
    index: int | None = None
    label: str | None = None
    scale: float = 2.0  # pixels per PDF point: 2.0 renders at 144 dpi (an A4 page is 1190x1684 pixels)

    def __post_init__(self) -> None:
        # Everything is checked here, so that a malformed page is one candidate's InputError (skipped
        # under on_error="skip") and never a TypeError or OverflowError from deep inside a call.
        if not isinstance(self.path, (str, os.PathLike)):
            raise InputError(f"PdfPage: path must be a str or os.PathLike, got {type(self.path).__name__}")
        try:
            shown = repr(os.fsdecode(os.fspath(self.path)))
        except (TypeError, ValueError) as exc:
            raise InputError(f"PdfPage: path {self.path!r} is not a usable file path: {exc}") from exc
        if not os.fspath(self.path):
            raise InputError("PdfPage: path is empty")
        if (self.index is None) == (self.label is None):
            raise InputError(f"PdfPage({shown}): name the page by index or by label, not both or neither")
        if self.index is not None and (
            isinstance(self.index, bool) or not isinstance(self.index, int) or self.index < 0
        ):
            raise InputError(f"PdfPage({shown}): index must be an int >= 0, got {self.index!r}")
        if self.label is not None and (not isinstance(self.label, str) or not self.label.strip()):
            raise InputError(f"PdfPage({shown}): label must be a non-empty str, got {self.label!r}")
        scale = self.scale
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
            raise InputError(
                f"PdfPage({shown}): scale must be a number (pixels per PDF point), got {type(scale).__name__} {scale!r}"
            )
        if not (math.isfinite(scale) and MIN_PDF_SCALE <= scale <= MAX_PDF_SCALE):
            raise InputError(
                f"PdfPage({shown}): scale must be a finite number in [{MIN_PDF_SCALE}, {MAX_PDF_SCALE}] pixels "
                f"per PDF point (2.0 is 144 dpi), got {scale!r}"
            )
        object.__setattr__(self, "scale", float(scale))

    def __str__(self) -> str:
        where = f"page={self.index + 1}" if self.index is not None else f"label={self.label}"
        return f"{os.fsdecode(os.fspath(self.path))}#{where}"


#: An image given as a file path, raw encoded bytes, a decoded PIL image, base64 text
#: (plain or a ``data:`` URI), an http(s) URL (read only through an explicit fetcher), or a PDF page
#: (:class:`PdfPage`, or a path with ``#page=N``).
ImageSource = Union[str, os.PathLike, bytes, Image.Image, PdfPage]

#: A video given as a file path, a ``file://`` URI, an http(s) URL (read only through an explicit fetcher, as
#: images are), a ``data:`` URI, an :class:`os.PathLike`, the file's encoded bytes (decoded with PyAV: the
#: ``video`` extra), or a list or tuple of frames, each any :data:`ImageSource` (sampled to ``video_max_frames``
#: as the official reranker samples a frame list). Sampling follows :class:`RerankConfig`'s ``video_*`` fields.
VideoSource = Union[str, os.PathLike, bytes, Sequence[ImageSource]]


@dataclass(frozen=True)
class Query:
    """A search query: text, images, videos, or any mix. In the prompt a side's videos come first, then its
    images, then its text (the official order)."""

    text: str | None = None
    images: Sequence[ImageSource] = field(default_factory=tuple)
    videos: Sequence[VideoSource] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        _check_text(self.text, "the query")
        object.__setattr__(self, "images", _as_image_tuple(self.images, "the query"))
        object.__setattr__(self, "videos", _as_video_tuple(self.videos, "the query"))

    @property
    def is_empty(self) -> bool:
        return not (self.text and self.text.strip()) and not self.images and not self.videos


@dataclass(frozen=True)
class Candidate:
    """A retrieved item to score against a query: text, images, videos, or any mix, with an optional id."""

    text: str | None = None
    images: Sequence[ImageSource] = field(default_factory=tuple)
    id: str | None = None
    videos: Sequence[VideoSource] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        _check_text(self.text, "a candidate")
        object.__setattr__(self, "images", _as_image_tuple(self.images, "a candidate"))
        object.__setattr__(self, "videos", _as_video_tuple(self.videos, "a candidate"))

    @property
    def is_empty(self) -> bool:
        return not (self.text and self.text.strip()) and not self.images and not self.videos


@dataclass(frozen=True)
class RerankResult:
    """One scored candidate: its position in the input list, its id if given, and P(relevant)."""

    index: int
    score: float
    id: str | None = None


@dataclass(frozen=True)
class SkippedCandidate:
    """A candidate left out under ``on_error="skip"``, with the reason."""

    index: int
    error: str
    id: str | None = None


class RerankResults(list[RerankResult]):
    """Results sorted by score (descending, ties by input order); ``skipped`` lists left-out candidates."""

    def __init__(self, results: Sequence[RerankResult] = (), skipped: Sequence[SkippedCandidate] = ()) -> None:
        super().__init__(results)
        self.skipped: list[SkippedCandidate] = list(skipped)


def as_query(query: str | Query) -> Query:
    """Accept a plain string for text-only use."""
    if isinstance(query, Query):
        return query
    if isinstance(query, str):
        return Query(text=query)
    raise InputError(f"a query must be a str or Query, got {type(query).__name__}")


def as_candidate(candidate: str | Candidate) -> Candidate:
    """Accept a plain string for text-only use."""
    if isinstance(candidate, Candidate):
        return candidate
    if isinstance(candidate, str):
        return Candidate(text=candidate)
    raise InputError(f"a candidate must be a str or Candidate, got {type(candidate).__name__}")


def _check_text(text: object, what: str) -> None:
    if text is not None and not isinstance(text, str):
        raise InputError(f"{what}'s text must be a str or None, got {type(text).__name__}")


def _as_image_tuple(images: object, what: str) -> tuple[ImageSource, ...]:
    if images is None:
        return ()
    if isinstance(images, str):
        # Iterating would make each character an image; one string is ambiguous, so it is refused.
        raise InputError(
            f"{what}'s images must be a list of image sources, got a str ({_shown(images)}); "
            "wrap one image in a list: images=[...]"
        )
    # One image is accepted where a list is expected; bytes are sequences too, of ints.
    if isinstance(images, (bytearray, memoryview)):
        return (bytes(images),)
    if isinstance(images, (bytes, os.PathLike, Image.Image, PdfPage)):
        return (images,)
    if isinstance(images, (Mapping, Set)):
        # A dict iterates over its keys, a set in no stable order: neither is a list of images.
        raise InputError(f"{what}'s images must be a list of image sources, got {type(images).__name__}")
    try:
        return tuple(images)  # type: ignore[arg-type]  # any iterable; a non-iterable is refused below
    except TypeError as exc:
        raise InputError(f"{what}'s images must be a list of image sources, got {type(images).__name__}") from exc


_FRAME_TYPES = (str, os.PathLike, bytes, bytearray, memoryview, Image.Image, PdfPage)


def _as_video_tuple(videos: object, what: str) -> tuple[VideoSource, ...]:
    """``videos`` as a tuple of videos, each a path, URL, bytes or a tuple of frames. Types are checked here
    (an :class:`InputError`); whether a video reads is checked when its side is prepared."""
    if videos is None:
        return ()
    if isinstance(videos, str):
        # One string could be a path or a list's worth of characters: refused, as for images.
        raise InputError(
            f"{what}'s videos must be a list of video sources, got a str ({_shown(videos)}); "
            "wrap one video in a list: videos=[...]"
        )
    if isinstance(videos, (bytes, bytearray, memoryview, os.PathLike)):
        return (_as_video(videos, what, 0),)
    if isinstance(videos, (Mapping, Set)):
        raise InputError(f"{what}'s videos must be a list of video sources, got {type(videos).__name__}")
    try:
        items = tuple(cast(Iterable[object], videos))  # any iterable; a non-iterable is refused below
    except TypeError as exc:
        raise InputError(f"{what}'s videos must be a list of video sources, got {type(videos).__name__}") from exc
    return tuple(_as_video(item, what, number) for number, item in enumerate(items))


def _as_video(video: object, what: str, number: int) -> VideoSource:
    if isinstance(video, (str, os.PathLike, bytes)):
        return video
    if isinstance(video, (bytearray, memoryview)):
        return bytes(video)
    if isinstance(video, (list, tuple)):
        for index, frame in enumerate(video):
            if not isinstance(frame, _FRAME_TYPES):
                raise InputError(
                    f"{what}'s video {number}: frame {index} must be an image source (path, bytes, PIL image), "
                    f"got {type(frame).__name__}"
                )
        return tuple(video)  # frozen: the caller's list may change after the call
    raise InputError(
        f"{what}'s video {number} must be a path, URL, bytes or a list of frames, got {type(video).__name__}"
    )


def _shown(text: str) -> str:
    return repr(text) if len(text) <= 60 else repr(text[:57]) + "..."
