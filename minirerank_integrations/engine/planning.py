"""Planning shared and per-pair work: which segments are the same, and what all of a batch shares.

The reranker scores each distinct prefix once and each distinct suffix's pre-band layers once, then
runs only the per-pair layers per pair (design notes, section 2); these helpers find what is shared.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .modeling import SegmentStates
from .prompts import Segment

__all__ = ["cut_shared_start", "distinct_segments", "segment_key"]


def segment_key(segment: Segment) -> tuple:
    """Equal keys, equal segments: the token ids and the images' content digests."""
    return segment.input_ids, tuple(im.digest for im in segment.images)


def distinct_segments(segments: Sequence[Segment]) -> tuple[list[Segment], list[int]]:
    """The distinct segments in first-seen order, and each input's row among them."""
    index: dict[tuple, int] = {}
    distinct: list[Segment] = []
    rows = []
    for segment in segments:
        key = segment_key(segment)
        if key not in index:
            index[key] = len(distinct)
            distinct.append(segment)
        rows.append(index[key])
    return distinct, rows


def cut_shared_start(
    segments: Sequence[Segment], states: list[SegmentStates], image_token_id: int
) -> tuple[SegmentStates | None, list[SegmentStates]]:
    """Split the text start shared by all segments (the system prompt) off their states, when long enough to
    be worth running once: (shared start or None, the rest of each segment)."""
    shared = _shared_text_start(segments, image_token_id)
    if len(segments) < 2 or shared < 8:
        return None, states
    first = states[0]
    head = first.select(torch.arange(first.length, device=first.visual.device) < shared)
    return head, [s.select(torch.arange(s.length, device=s.visual.device) >= shared) for s in states]


def _shared_text_start(segments: Sequence[Segment], image_token_id: int) -> int:
    """How many leading token ids all segments share, stopping before any image token and leaving at
    least the last token of each segment outside. Pruning never touches text, so these survive it."""
    limit = min(len(seg.input_ids) for seg in segments) - 1
    first = segments[0].input_ids
    n = 0
    while n < limit and first[n] != image_token_id and all(seg.input_ids[n] == first[n] for seg in segments):
        n += 1
    return n
