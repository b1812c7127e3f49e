"""minirerank-integrations: a fast, faithful multimodal reranker on Qwen3-VL."""

from .config import RerankConfig
from .errors import (
    CacheError,
    CandidateError,
    ConfigError,
    ImageLoadError,
    InputError,
    MiniRerankError,
    ModelLoadError,
)
from .inputs import Candidate, Query, RerankResult, RerankResults, SkippedCandidate
from .reranker import MiniReranker, WorkCounters

__all__ = [
    "CacheError",
    "Candidate",
    "CandidateError",
    "ConfigError",
    "ImageLoadError",
    "InputError",
    "MiniRerankError",
    "MiniReranker",
    "ModelLoadError",
    "Query",
    "RerankConfig",
    "RerankResult",
    "RerankResults",
    "SkippedCandidate",
    "WorkCounters",
]

__version__ = "0.1.0"
