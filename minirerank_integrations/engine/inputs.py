"""What a caller passes in: queries and candidates made of text and/or images, and what comes back."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Union

from PIL import Image

from ..errors import InputError


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
        if (self.index is None) == (self.label is None):
            raise InputError(
                f"PdfPage({os.fspath(self.path)!r}): name the page by index or by label, not both or neither"
            )
        if self.index is not None and (
            isinstance(self.index, bool) or not isinstance(self.index, int) or self.index < 0
        ):
            raise InputError(f"PdfPage({os.fspath(self.path)!r}): index must be an int >= 0, got {self.index!r}")
        if not self.scale > 0:
            raise InputError(f"PdfPage({os.fspath(self.path)!r}): scale must be > 0, got {self.scale!r}")

    def __str__(self) -> str:
        where = f"page={self.index + 1}" if self.index is not None else f"label={self.label}"
        return f"{os.fspath(self.path)}#{where}"


#: An image given as a file path, raw encoded bytes, a decoded PIL image, base64 text
#: (plain or a ``data:`` URI), an http(s) URL (read only through an explicit fetcher), or a PDF page
#: (:class:`PdfPage`, or a path with ``#page=N``).
ImageSource = Union[str, os.PathLike, bytes, Image.Image, PdfPage]


@dataclass(frozen=True)
class Query:
    """A search query: text, images, or both."""

    text: str | None = None
    images: Sequence[ImageSource] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        _check_text(self.text, "the query")
        object.__setattr__(self, "images", _as_image_tuple(self.images))

    @property
    def is_empty(self) -> bool:
        return not (self.text and self.text.strip()) and not self.images


@dataclass(frozen=True)
class Candidate:
    """A retrieved item to score against a query: text, images, or both, with an optional id."""

    text: str | None = None
    images: Sequence[ImageSource] = field(default_factory=tuple)
    id: str | None = None

    def __post_init__(self) -> None:
        _check_text(self.text, "a candidate")
        object.__setattr__(self, "images", _as_image_tuple(self.images))

    @property
    def is_empty(self) -> bool:
        return not (self.text and self.text.strip()) and not self.images


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


def _as_image_tuple(images: Sequence[ImageSource] | ImageSource | None) -> tuple[ImageSource, ...]:
    if images is None:
        return ()
    # A single image is accepted where a list is expected; strings and bytes are sequences too.
    if isinstance(images, (str, bytes, os.PathLike, Image.Image, PdfPage)):
        return (images,)
    return tuple(images)
