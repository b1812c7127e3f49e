"""minirerank-integrations: a fast, faithful multimodal reranker on Qwen3-VL."""

from .config import RerankConfig
from .demo_model import DEMO_MODEL
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
    "Query",
    "RerankConfig",
    "RerankResult",
    "RerankResults",
    "SkippedCandidate",
    "WorkCounters",
]

__version__ = "0.1.0"
