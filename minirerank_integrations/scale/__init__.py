"""Pre-caching a corpus: reading document lists and filling a shared prefix store, in one process or on Ray.

It stands on top of the engine: :mod:`.documents` reads a document list (image and text files, folders,
JSONL in this project's format or a LlamaIndex / LangChain document dump) into candidates;
:mod:`.ingest` computes and stores their prefixes through ``MiniReranker.precache``, whose report gives one
outcome per document (stored, already present, or failed with its reason); :mod:`.report` sums the outcomes up
(documents/s, bytes stored, failures); :mod:`.ray_pipeline` runs the same ingestion as a Ray Data
pipeline over an actor pool, one loaded model per actor, writing to a shared store (Redis). Ray is
imported only there, and only when that function runs (the ``ray`` extra).
"""

from .documents import read_documents
from .ingest import precache_documents
from .ray_pipeline import precache_on_ray
from .report import Failure, IngestReport

__all__ = ["Failure", "IngestReport", "precache_documents", "precache_on_ray", "read_documents"]
