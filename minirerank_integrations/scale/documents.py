"""Document lists to candidates: the engine's one document reader (:mod:`..engine.documents`), named here
for the pre-caching tools that read through it."""

from __future__ import annotations

from ..engine.documents import UnreadableDocument, read_corpus, read_documents

__all__ = ["UnreadableDocument", "read_corpus", "read_documents"]
