"""minirerank-integrations: a fast, faithful multimodal reranker on Qwen3-VL."""

from .demo_model import DEMO_MODEL
from .engine.config import RerankConfig
from .engine.inputs import Candidate, PdfPage, Query, RerankResult, RerankResults, SkippedCandidate
from .engine.pdf import pdf_pages
from .engine.reranker import MiniReranker, WorkCounters
from .errors import (
    CacheError,
    CandidateError,
    ConfigError,
    ImageLoadError,
    InputError,
    MiniRerankError,
    ModelLoadError,
)

__all__ = [
    "DEMO_MODEL",
    "CacheError",
    "Candidate",
    "CandidateError",
    "ConfigError",
    "ImageLoadError",
    "InputError",
    "MiniRerankError",
    "MiniReranker",
    "ModelLoadError",
    "PdfPage",
    "Query",
    "RerankConfig",
    "RerankResult",
    "RerankResults",
    "SkippedCandidate",
    "WorkCounters",
    "pdf_pages",
]

__version__ = "0.1.0"
