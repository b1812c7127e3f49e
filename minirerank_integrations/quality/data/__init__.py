"""Synthetic multimodal reranking data: a seeded generator, PIL rendering, and a JSONL file format.

Example::

    from minirerank_integrations.quality.data import generate, save_tasks, load_tasks

    tasks = generate("text_to_image", "test", n_queries=50, seed=0)
    save_tasks(tasks, "data/t2i-test")          # tasks.jsonl + images/*.png, see docs/data-format.md
    same = load_tasks("data/t2i-test")          # images come back as file paths
"""

from .generator import SPLITS, attribute_space, caption, generate, labelled_images, query_text, split_of
from .jsonl import load_tasks, save_tasks
from .retrieved import load_documents, load_retrieved
from .tasks import FAMILIES, VIDEO_FAMILIES, RerankTask, attribute_distance

__all__ = [
    "FAMILIES",
    "SPLITS",
    "VIDEO_FAMILIES",
    "RerankTask",
    "attribute_distance",
    "attribute_space",
    "caption",
    "generate",
    "labelled_images",
    "load_documents",
    "load_retrieved",
    "load_tasks",
    "query_text",
    "save_tasks",
    "split_of",
]
