"""Turning what a caller passes (queries, candidates, pairs) into prepared sides: checked text and resized
images with their token grids. Everything here belongs to one side of one pair, so its errors are typed and
name that side; the reranker wraps a candidate's errors in :class:`CandidateError`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from ..errors import ImageLoadError, InputError, VideoLoadError
from .config import RerankConfig
from .image_keys import key_image
from .images import ImageFetcher
from .inputs import Candidate, OnError, Query
from .modeling import Backbone
from .prompts import PreparedImage, SideContent
from .video import prepare_video
from .video_settings import VideoSettings

__all__ = ["OnError", "candidate_list", "check_on_error", "check_top_n", "pair_list", "prepare_side"]


def prepare_side(
    backbone: Backbone,
    item: Query | Candidate,
    what: str,
    cfg: RerankConfig,
    *,
    fetcher: ImageFetcher | None = None,
    side: Literal["query", "candidate"] = "candidate",
) -> SideContent:
    """Read one side's images and videos and check its text. ``what`` names the item in messages; a candidate's
    errors are wrapped in :class:`CandidateError` by the caller, so its images are named "image i" (its videos
    "video i").

    An image seen before (same bytes, same resize bounds) is not decoded again: its size is remembered, and its
    pixels are decoded only if they are encoded (:mod:`.image_keys`)."""
    if item.is_empty:
        raise InputError(f"{what} has neither text nor images")
    if item.text is not None:
        check_encodable(item.text, what)
    images = []
    for number, source in enumerate(item.images):
        try:
            # Keyed by its source bytes: a source seen before is not decoded again unless its pixels are needed.
            keyed = key_image(source, fetcher=fetcher, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels)
        except ImageLoadError as exc:
            label = f"{what}'s image {number}" if side == "query" else f"image {number}"
            raise ImageLoadError(f"{label}: {exc}") from exc
        width, height = keyed.size
        grid = (1, height // backbone.patch_size, width // backbone.patch_size)
        images.append(PreparedImage(keyed.image, grid, keyed.digest, backbone.merge_size, loader=keyed.loader))
    videos = []
    for number, video in enumerate(item.videos):
        try:
            videos.append(
                prepare_video(
                    video,
                    settings=VideoSettings.of(cfg),
                    processing=backbone.video_processing,
                    fetcher=fetcher,
                )
            )
        except VideoLoadError as exc:
            label = f"{what}'s video {number}" if side == "query" else f"video {number}"
            raise VideoLoadError(f"{label}: {exc}") from exc
    content = SideContent(item.text, tuple(images), tuple(videos))
    pads = sum(unit.num_tokens + 2 for unit in content.visual_units)  # + vision_start and vision_end
    if pads > cfg.max_length:
        shown = f"{len(images)} images" + (f" and {len(videos)} videos" if videos else "")
        raise InputError(f"{what}'s {shown} need {pads} tokens, more than max_length {cfg.max_length}")
    return content


def check_encodable(text: str, what: str) -> None:
    """Refuse text that cannot be encoded as UTF-8 (lone surrogates, e.g. from a bad decode)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(
            f"{what}'s text cannot be encoded as UTF-8 ({exc.reason} at position {exc.start}: "
            f"{text[exc.start : exc.end]!r})"
        ) from exc


def check_top_n(top_n: object) -> None:
    if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 0):
        raise InputError(f"top_n must be an int >= 0 or None, got {top_n!r}")


def check_on_error(on_error: object) -> None:
    if on_error not in ("raise", "skip"):
        raise InputError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


def _not_a_list(items: object, what: str, expected: str) -> None:
    # A str, bytes or dict is iterable too, and would be read item by item (each character a candidate).
    if isinstance(items, (str, bytes, bytearray, memoryview, Mapping, Query, Candidate)):
        raise InputError(f"{what} takes a list of {expected}, got a {type(items).__name__}: wrap it in a list")
    if not isinstance(items, Iterable):
        raise InputError(f"{what} takes a list of {expected}, got {type(items).__name__}")


def candidate_list(candidates: object, what: str) -> list:
    """``candidates`` as a list, refusing a single string, mapping or candidate passed where a list belongs."""
    _not_a_list(candidates, what, "candidates")
    return list(candidates)  # type: ignore[call-overload]


def pair_list(pairs: object) -> list:
    """``pairs`` as a list of 2-tuples, naming the first malformed pair."""
    _not_a_list(pairs, "score", "(query, candidate) pairs")
    checked = list(pairs)  # type: ignore[call-overload]
    for index, pair in enumerate(checked):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            shown = f"{type(pair).__name__} of {len(pair)}" if isinstance(pair, (tuple, list)) else type(pair).__name__
            raise InputError(f"pair {index} must be a (query, candidate) tuple, got {shown}")
    return checked
