"""The plan of one call: from prepared (query, candidate) sides to the segments each pair needs, the store key
of each distinct prefix, and the distinct suffixes (``docs/design.md``, "The computation plan").

A plan is data: it names what to compute, the executor (:mod:`.execution`) computes it. Pairs from several
requests may share one plan (:meth:`MiniReranker.rerank_many`); a page two requests ask about is then one
distinct prefix, read or computed once, and each pair's row says which prefix and suffix it uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from .config import RerankConfig
from .keys import PrefixKeyer
from .modeling import Backbone, SegmentStates
from .prompts import Segment, SideContent, query_first_segment, vision_first_segments

__all__ = [
    "CallPlan",
    "cut_shared_start",
    "distinct_segments",
    "pair_segments",
    "plan_call",
    "prefix_side",
    "segment_key",
]

SidePair = tuple[SideContent, SideContent]


@dataclass
class CallPlan:
    """What one call computes.

    Identical pairs are one row, computed once (their scores are then equal exactly, and cheaper);
    ``pair_rows[i]`` is pair ``i``'s row. Query-first: a row is a whole prompt in ``singles``. Vision-first:
    ``rows`` holds each distinct (prefix key, suffix key); ``prefixes`` maps each distinct prefix's store key to
    its segment and ``suffixes`` each distinct suffix's :func:`segment_key` to its segment (first-seen order).
    """

    config: RerankConfig
    singles: list[Segment] = field(default_factory=list)
    prefixes: dict[str, Segment] = field(default_factory=dict)
    suffixes: dict[tuple, Segment] = field(default_factory=dict)
    rows: list[tuple[str, tuple]] = field(default_factory=list)
    pair_rows: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        """How many pairs the plan scores (repeats included)."""
        return len(self.pair_rows)

    def fetch_windows(self, window: int) -> list[list[str]]:
        """Per window of ``window`` rows, the prefix keys it needs that no earlier window brought."""
        seen: set[str] = set()
        fetches = []
        for start in range(0, len(self.rows), window):
            fetches.append([k for k in dict.fromkeys(k for k, _ in self.rows[start : start + window]) if k not in seen])
            seen.update(fetches[-1])
        return fetches

    def last_use(self) -> dict[str, int]:
        """The index of the last row that reads each prefix."""
        return {key: i for i, (key, _) in enumerate(self.rows)}


def prefix_side(q: SideContent, d: SideContent, cfg: RerankConfig) -> Literal["query", "document"]:
    """Which side is the cached prefix: the configured one, or by default the document side unless only the
    query carries images (``docs/design.md``, "The miniReranker computation")."""
    side = cfg.prefix_side
    if side != "auto":
        return side
    return "query" if q.has_visual and not d.has_visual else "document"


def pair_segments(
    backbone: Backbone,
    q: SideContent,
    d: SideContent,
    cfg: RerankConfig,
    side: Literal["query", "document"] | None = None,
) -> tuple[Segment, Segment | None]:
    """A pair's prompt under ``cfg``: (whole prompt, None) query-first, else (prefix, suffix)."""
    if cfg.format == "query_first":
        segment = query_first_segment(
            backbone.tokenizer, q, d, cfg.instruction, max_length=cfg.max_length, special_ids=backbone.special_ids
        )
        return segment, None
    return vision_first_segments(
        backbone.tokenizer,
        q,
        d,
        cfg.instruction,
        side or prefix_side(q, d, cfg),
        max_length=cfg.max_length,
        special_ids=backbone.special_ids,
        instruction_in_prefix=cfg.instruction_in_prefix,
    )


def plan_call(backbone: Backbone, embedder: Backbone, pairs: Sequence[SidePair], cfg: RerankConfig) -> CallPlan:
    """The plan of scoring ``pairs`` under ``cfg``."""
    plan = CallPlan(cfg)
    row_of: dict[tuple, int] = {}
    keyer = PrefixKeyer(cfg, backbone, embedder)  # the model's fingerprint checked once per call, not per pair
    # Vision-first, a prefix is made of one side and the suffix of the other: each side's segment (and the prefix's
    # store key) is built once per distinct side, not once per pair (merged requests repeat pages and queries).
    made_prefixes: dict[tuple, tuple[Segment, str]] = {}
    made_suffixes: dict[tuple, tuple[Segment, tuple]] = {}
    for q, d in pairs:
        if cfg.format == "query_first":
            first, _ = pair_segments(backbone, q, d, cfg)
            row = segment_key(first)
            if row not in row_of:
                row_of[row] = len(plan.singles)
                plan.singles.append(first)
        else:
            side = prefix_side(q, d, cfg)
            first_side, second_side = (d, q) if side == "document" else (q, d)
            made_first = made_prefixes.get(first_key := (side, _side_key(first_side)))
            made_second = made_suffixes.get(second_key := (side, _side_key(second_side)))
            if made_first is None or made_second is None:
                first, second = pair_segments(backbone, q, d, cfg, side)
                assert second is not None  # vision-first: a prefix and a suffix
                made_first, made_second = (first, keyer(first)), (second, segment_key(second))
                if first_key[1] is not None:
                    made_prefixes[first_key] = made_first
                if second_key[1] is not None:
                    made_suffixes[second_key] = made_second
            (first, key), (second, suffix) = made_first, made_second
            row = (key, suffix)
            if row not in row_of:
                row_of[row] = len(plan.rows)
                plan.rows.append(row)
                plan.prefixes.setdefault(key, first)
                plan.suffixes.setdefault(suffix, second)
        plan.pair_rows.append(row_of[row])
    return plan


def _side_key(content: SideContent) -> tuple | None:
    """What a side's part of a prompt is made of: its text and its images' identities and token grids (None for a
    side with videos: not reused)."""
    if content.videos:
        return None
    return content.text, tuple((im.digest, im.grid_thw, im.merge_size) for im in content.images)


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
