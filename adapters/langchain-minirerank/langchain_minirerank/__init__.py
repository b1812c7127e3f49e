"""LangChain integration of minirerank: a multimodal (text and image) reranker on Qwen3-VL."""

from importlib import metadata

from langchain_minirerank.rerank import MiniRerankCompressor, RerankInput
from langchain_minirerank.retrievers import MiniRerankRetriever

try:
    __version__ = metadata.version(__package__ or __name__)
except metadata.PackageNotFoundError:
    __version__ = ""

__all__ = ["MiniRerankCompressor", "MiniRerankRetriever", "RerankInput", "__version__"]
