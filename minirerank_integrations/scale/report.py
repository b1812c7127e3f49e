"""What a pre-caching run did: one outcome per document (what ``MiniReranker.precache`` reported for it, a
skipped document counted as ``failed``), summed up with the run's throughput."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Status = Literal["stored", "present", "failed"]


@dataclass(frozen=True)
class Outcome:
    """One document's result: its prefix was ``stored`` now, was already ``present``, or ``failed``."""

    position: int  # index in the document list
    id: str | None
    status: Status
    reason: str | None = None  # why it failed
    bytes: int = 0  # the stored prefix's keys and values, as computed (before the store's encoding)


@dataclass(frozen=True)
class Failure:
    """A document whose prefix could not be stored, and why."""

    position: int
    id: str | None
    reason: str


@dataclass
class IngestReport:
    """The sum of a run: counts, bytes, throughput and the failures with their reasons."""

    documents: int = 0
    stored: list[str | None] = field(default_factory=list)  # ids of the documents stored by this run
    present: list[str | None] = field(default_factory=list)  # ids already in the store (skipped)
    failures: list[Failure] = field(default_factory=list)
    bytes_stored: int = 0  # the stored prefixes' keys and values as computed (an int8 store writes about half)
    seconds: float = 0.0  # wall clock of the whole run, model loading included
    workers: int = 1

    @classmethod
    def of(cls, outcomes: list[Outcome], *, seconds: float, workers: int) -> IngestReport:
        ordered = sorted(outcomes, key=lambda o: o.position)
        return cls(
            documents=len(ordered),
            stored=[o.id for o in ordered if o.status == "stored"],
            present=[o.id for o in ordered if o.status == "present"],
            failures=[Failure(o.position, o.id, o.reason or "unknown") for o in ordered if o.status == "failed"],
            bytes_stored=sum(o.bytes for o in ordered),
            seconds=seconds,
            workers=workers,
        )

    @property
    def documents_per_second(self) -> float:
        """Documents handled (stored, present or failed) per second of the whole run."""
        return self.documents / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """A few human-readable lines, failures last."""
        lines = [
            f"documents: {self.documents} ({len(self.stored)} stored, {len(self.present)} already stored, "
            f"{len(self.failures)} failed)",
            f"bytes stored: {self.bytes_stored} ({self.bytes_stored / 2**20:.1f} MiB)",
            f"time: {self.seconds:.1f} s, {self.documents_per_second:.2f} documents/s with {self.workers} worker(s)",
        ]
        lines += [f"failed: document {f.position} ({f.id}): {f.reason}" for f in self.failures]
        return "\n".join(lines)
