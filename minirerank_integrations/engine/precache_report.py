"""What :meth:`MiniReranker.precache` did with each document: stored now, already present, or skipped and why."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, overload

from ..errors import CandidateError
from ..store import PrefixStore

#: ``stored``: computed by this call and held by the store of record; ``present``: the store already held it
#: (nothing computed); ``skipped``: not stored, ``reason`` says why (a bad document under ``on_error="skip"``,
#: or a store that did not keep the entry).
PrecacheStatus = Literal["stored", "present", "skipped"]


@dataclass(frozen=True)
class PrecacheOutcome:
    """One document's outcome, at its index in the documents given to ``precache``."""

    index: int
    id: str | None  # the candidate's id, when it has one
    status: PrecacheStatus
    reason: str | None = None  # why it was skipped
    key: str | None = None  # its prefix's store key (None when it could not be read)
    bytes: int = 0  # keys and values computed and stored now (PrefixEntry.nbytes(), before the store's encoding)
    #: The bad document's error (its ``cause`` is what it raised), for callers that re-raise it typed.
    error: CandidateError | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class PrecacheReport(Sequence[PrecacheOutcome]):
    """One :class:`PrecacheOutcome` per document given, in order, with the counts of each status."""

    outcomes: tuple[PrecacheOutcome, ...] = ()

    @property
    def stored(self) -> int:
        """Documents whose prefix this call computed and stored."""
        return sum(o.status == "stored" for o in self.outcomes)

    @property
    def present(self) -> int:
        """Documents whose prefix the store already held."""
        return sum(o.status == "present" for o in self.outcomes)

    @property
    def skipped(self) -> int:
        """Documents not stored (see each outcome's ``reason``)."""
        return sum(o.status == "skipped" for o in self.outcomes)

    @overload
    def __getitem__(self, index: int) -> PrecacheOutcome: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[PrecacheOutcome]: ...

    def __getitem__(self, index: int | slice) -> PrecacheOutcome | Sequence[PrecacheOutcome]:
        return self.outcomes[index]

    def __len__(self) -> int:
        return len(self.outcomes)

    def __iter__(self) -> Iterator[PrecacheOutcome]:
        return iter(self.outcomes)

    def __str__(self) -> str:
        return f"{len(self)} documents: {self.stored} stored, {self.present} already present, {self.skipped} skipped"


def kept_by_store(outcomes: Sequence[PrecacheOutcome], store: PrefixStore) -> PrecacheReport:
    """The report of ``outcomes`` once ``store``'s queued writes are flushed: a ``stored`` entry its store of
    record does not hold (a write that failed, an entry evicted by later ones) becomes ``skipped``, naming the
    store. A store logs a failed write instead of raising it, so asking it afterwards is what tells them apart."""
    store.flush()
    lost = f"the prefix store did not keep the entry ({store!r}; see the warnings logged)"
    return PrecacheReport(
        tuple(
            replace(o, status="skipped", reason=lost, bytes=0) if o.status == "stored" and o.key not in store else o
            for o in outcomes
        )
    )
