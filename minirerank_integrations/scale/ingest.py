"""Computing and storing the prefixes of documents through the engine, one outcome per document."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

from tqdm.auto import tqdm

from ..engine.inputs import Candidate
from ..engine.reranker import MiniReranker
from ..errors import CandidateError, MiniRerankError
from .report import Outcome, PrecacheReport


def ingest(engine: MiniReranker, documents: Sequence[Candidate], positions: Sequence[int]) -> list[Outcome]:
    """Store the prefix of each document unless the store of record already holds it.

    A document that cannot be read or encoded, or whose entry the store did not take (server down,
    full), is a ``failed`` outcome with its reason; nothing is raised for it.
    """
    outcomes = []
    store = engine.store
    for position, document in zip(positions, documents):
        before = replace(store.stats)  # a copy: some stores update their stats object in place
        try:
            computed = engine.precache([document], progress=False)
        except CandidateError as error:
            outcomes.append(Outcome(position, document.id, "failed", str(error.cause)))
            continue
        except MiniRerankError as error:
            outcomes.append(Outcome(position, document.id, "failed", f"{type(error).__name__}: {error}"))
            continue
        after = store.stats
        if not computed:
            outcomes.append(Outcome(position, document.id, "present"))
        elif after.write_failures > before.write_failures or after.writes == before.writes:
            reason = f"the prefix store did not take the entry ({store!r}; see the warnings logged)"
            outcomes.append(Outcome(position, document.id, "failed", reason))
        else:
            outcomes.append(Outcome(position, document.id, "stored", bytes=after.bytes_written - before.bytes_written))
    return outcomes


def precache_documents(
    engine: MiniReranker, documents: Sequence[Candidate], *, progress: bool = True
) -> PrecacheReport:
    """Pre-cache ``documents`` in this process (resumable: what the store holds is skipped)."""
    start = time.perf_counter()
    outcomes = []
    for position, document in enumerate(tqdm(documents, disable=not progress, desc="precache", unit="doc")):
        outcomes.extend(ingest(engine, [document], [position]))
    return PrecacheReport.of(outcomes, seconds=time.perf_counter() - start, workers=1)
