"""``WorkCounters``: how much of each kind of work the engine did, so tests and the demo can see what was reused."""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["WorkCounters"]


@dataclass
class WorkCounters:
    """How much work the engine did since construction (or the last ``reset``)."""

    prefix_computations: int = 0  # prefixes run through the decoder (store misses)
    prefix_hits: int = 0  # prefixes read from the store
    suffix_prebands: int = 0  # distinct suffixes run through the layers below the band
    pair_passes: int = 0  # (prefix, suffix) pairs run through band start..exit
    single_passes: int = 0  # whole query-first prompts scored
    vision_encodings: int = 0  # images run through the vision encoder
    embedder_passes: int = 0  # images ranked by the embedder for pruning

    def reset(self) -> None:
        for f in fields(self):
            setattr(self, f.name, 0)
