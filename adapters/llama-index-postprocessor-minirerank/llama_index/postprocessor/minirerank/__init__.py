"""LlamaIndex integration of minirerank: a multimodal node postprocessor and an ingestion pre-cache step."""

from llama_index.postprocessor.minirerank.base import MiniRerank
from llama_index.postprocessor.minirerank.precache import MiniRerankPrecache

__all__ = ["MiniRerank", "MiniRerankPrecache"]
