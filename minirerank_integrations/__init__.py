"""minirerank-integrations: a fast, faithful multimodal reranker on Qwen3-VL.

The engine's names load on first use (PEP 562), so ``import minirerank_integrations`` and
``minirerank --help`` do not import torch and transformers until something needs them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from .demo_model import DEMO_MODEL
from .errors import (
    CacheError,
    CallCancelled,
    CandidateError,
    ConfigError,
    ImageLoadError,
    InputError,
    MiniRerankError,
    MissingExtraError,
    ModelLoadError,
    ScoreError,
    TrainingError,
    VideoLoadError,
)

if TYPE_CHECKING:
    from .engine.config import PresetName, RerankConfig
    from .engine.counters import WorkCounters
    from .engine.documents import copied_metadata
    from .engine.images import ImageFetcher, fetch_image, is_image_file, is_image_string
    from .engine.inputs import (
        Candidate,
        OnError,
        PdfPage,
        Query,
        RerankResult,
        RerankResults,
        SkippedCandidate,
        VideoSource,
    )
    from .engine.loading import default_device
    from .engine.pdf import pdf_pages
    from .engine.precache_report import PrecacheOutcome, PrecacheReport
    from .engine.request import RerankRequest
    from .engine.reranker import MiniReranker
    from .engine.sources import fetch_source
    from .store.config import StoreConfig

#: Public name -> the module that defines it.
_LAZY = {
    "RerankConfig": ".engine.config",
    "PresetName": ".engine.config",
    "ImageFetcher": ".engine.images",
    "fetch_image": ".engine.images",
    "fetch_source": ".engine.sources",
    "copied_metadata": ".engine.documents",
    "default_device": ".engine.loading",
    "is_image_file": ".engine.images",
    "is_image_string": ".engine.images",
    "OnError": ".engine.inputs",
    "Candidate": ".engine.inputs",
    "PdfPage": ".engine.inputs",
    "PrecacheOutcome": ".engine.precache_report",
    "PrecacheReport": ".engine.precache_report",
    "Query": ".engine.inputs",
    "RerankResult": ".engine.inputs",
    "RerankResults": ".engine.inputs",
    "SkippedCandidate": ".engine.inputs",
    "VideoSource": ".engine.inputs",
    "pdf_pages": ".engine.pdf",
    "MiniReranker": ".engine.reranker",
    "RerankRequest": ".engine.request",
    "WorkCounters": ".engine.counters",
    "StoreConfig": ".store.config",
}

__all__ = [
    "DEMO_MODEL",
    "CacheError",
    "CallCancelled",
    "Candidate",
    "CandidateError",
    "ConfigError",
    "ImageFetcher",
    "ImageLoadError",
    "InputError",
    "MiniRerankError",
    "MiniReranker",
    "MissingExtraError",
    "ModelLoadError",
    "OnError",
    "PdfPage",
    "PrecacheOutcome",
    "PrecacheReport",
    "PresetName",
    "Query",
    "RerankConfig",
    "RerankResult",
    "RerankRequest",
    "RerankResults",
    "ScoreError",
    "SkippedCandidate",
    "StoreConfig",
    "TrainingError",
    "VideoLoadError",
    "VideoSource",
    "WorkCounters",
    "copied_metadata",
    "default_device",
    "fetch_image",
    "fetch_source",
    "is_image_file",
    "is_image_string",
    "pdf_pages",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
