"""One reranking task: a query, its candidates, which of them are relevant, and the attributes behind them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ...engine.inputs import Candidate, Query
from ...errors import InputError

__all__ = ["FAMILIES", "VIDEO_FAMILIES", "RerankTask", "attribute_distance"]

#: The three image task families the generator produces; files may name any other family.
FAMILIES = ("text_to_image", "text_to_doc", "image_to_text")
#: The generator's video family, apart from ``FAMILIES`` so that everything measured over the image families
#: (the demo's results, the retention bar, the CLI's default evaluation) stays as it was.
VIDEO_FAMILIES = ("text_to_video",)


@dataclass(frozen=True)
class RerankTask:
    """A query with its candidate list and one relevance label per candidate.

    ``relevance[j]`` is the gain of ``candidates[j]``: the generator writes 0 (irrelevant) or 1 (relevant);
    files may carry larger integers for graded relevance. ``query_attributes`` and ``candidate_attributes``
    describe what was rendered (e.g. ``{"colour": "red", "shape": "circle", ...}``); they are metadata for
    analysis and tests, never shown to a reranker, and may be empty for data brought from elsewhere.
    """

    id: str
    family: str
    query: Query
    candidates: Sequence[Candidate]
    relevance: Sequence[int]
    query_attributes: Mapping[str, str] = field(default_factory=dict)
    candidate_attributes: Sequence[Mapping[str, str]] = ()
    #: False for a task read without labels (an adaptation group): ``relevance`` is then all zeros.
    labelled: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "candidates", list(self.candidates))
        object.__setattr__(self, "relevance", [int(r) for r in self.relevance])
        object.__setattr__(self, "query_attributes", dict(self.query_attributes))
        object.__setattr__(self, "candidate_attributes", [dict(a) for a in self.candidate_attributes])
        if len(self.relevance) != len(self.candidates):
            raise InputError(
                f"task {self.id!r}: {len(self.relevance)} relevance labels for {len(self.candidates)} candidates; "
                "give exactly one label per candidate"
            )
        if any(r < 0 for r in self.relevance):
            raise InputError(f"task {self.id!r}: relevance labels must be >= 0, got {self.relevance}")
        if self.candidate_attributes and len(self.candidate_attributes) != len(self.candidates):
            raise InputError(
                f"task {self.id!r}: {len(self.candidate_attributes)} attribute sets for {len(self.candidates)} "
                "candidates; give one per candidate or none"
            )

    @property
    def positives(self) -> list[int]:
        """Indices of the relevant candidates."""
        return [j for j, r in enumerate(self.relevance) if r > 0]

    def candidate_key(self, index: int) -> str:
        """The candidate's id, or its position as text when it has none."""
        candidate_id = self.candidates[index].id
        return candidate_id if candidate_id is not None else str(index)


def attribute_distance(a: Mapping[str, str], b: Mapping[str, str]) -> int:
    """How many attributes differ between two attribute sets (keys missing on one side count as differing)."""
    return sum(a.get(key) != b.get(key) for key in set(a) | set(b))
