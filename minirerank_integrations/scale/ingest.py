"""Computing and storing the prefixes of documents through the engine, one outcome per document."""

from __future__ import annotations

import time
from collections.abc import Sequence

from tqdm.auto import tqdm

from ..engine.inputs import Candidate
from ..engine.reranker import MiniReranker
from ..errors import MiniRerankError
from .report import IngestReport, Outcome


def ingest(engine: MiniReranker, documents: Sequence[Candidate], positions: Sequence[int]) -> list[Outcome]:
    """Store the prefix of each document unless the store of record already holds it.

    Each outcome is what ``MiniReranker.precache`` reports for the document: ``stored``, ``present``, or
    ``failed`` with its reason (a document that cannot be read or encoded, an entry the store did not keep).
    Nothing is raised for one document: each is pre-cached on its own, so an error that fails the engine's
    call (a PDF changed while it was encoded) is that document's outcome too.
    """
    outcomes = []
    for position, document in zip(positions, documents):
        try:
            (done,) = engine.precache([document], progress=False, on_error="skip")
        except MiniRerankError as error:
            outcomes.append(Outcome(position, document.id, "failed", f"{type(error).__name__}: {error}"))
            continue
        status = "failed" if done.status == "skipped" else done.status
        outcomes.append(Outcome(position, document.id, status, done.reason, bytes=done.bytes))
    return outcomes


def precache_documents(engine: MiniReranker, documents: Sequence[Candidate], *, progress: bool = True) -> IngestReport:
    """Pre-cache ``documents`` in this process (resumable: what the store holds is skipped)."""
    start = time.perf_counter()
    outcomes = []
    for position, document in enumerate(tqdm(documents, disable=not progress, desc="precache", unit="doc")):
        outcomes.extend(ingest(engine, [document], [position]))
    return IngestReport.of(outcomes, seconds=time.perf_counter() - start, workers=1)
