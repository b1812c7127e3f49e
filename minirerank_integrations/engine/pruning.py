"""Visual-token pruning: rank each image's tokens, keep the top share, in their original order.

Importance depends on the image alone (its pixels, and the embedder or the seed), never on the
other side of the pair, so a pruned prefix can be cached and scores do not depend on the batch.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence

import torch

from .layers import last_token_attention_batch
from .modeling import Backbone
from .prompts import PreparedImage, Segment, embedder_segment

FeatureLookup = Callable[[Backbone, PreparedImage], tuple[torch.Tensor, list[torch.Tensor]]]


def kept_count(num_tokens: int, keep_ratio: float) -> int:
    """ceil(keep_ratio * n), at least one token per image."""
    return max(1, math.ceil(keep_ratio * num_tokens - 1e-9))


def embedder_importance(
    embedder: Backbone, image: PreparedImage, features: FeatureLookup, layers: int | None = None
) -> torch.Tensor:
    """Importance [tokens] of one image's visual tokens: the attention paid to each by the embedder's
    pooled (last) token, in a Qwen3-VL-Embedding prompt holding the image alone.

    Averaged over every head of the first ``layers`` layers of the embedder (None: every layer; the
    full-depth guide). Only those layers run, so a shallow guide makes ingestion cheap.
    """
    return embedder_importances(embedder, [image], features, layers)[0]


def embedder_importances(
    embedder: Backbone, images: Sequence[PreparedImage], features: FeatureLookup, layers: int | None = None
) -> list[torch.Tensor]:
    """:func:`embedder_importance` of several images in one batched embedder pass (same numbers)."""
    segments: list[Segment] = [embedder_segment(embedder.tokenizer, image) for image in images]
    states = [
        embedder.embed(segment, {image.digest: features(embedder, image)}) for segment, image in zip(segments, images)
    ]
    out = []
    for image, state, probs in zip(images, states, last_token_attention_batch(embedder, states, layers)):
        importance = probs.mean(dim=(0, 1))[state.visual]  # probs: [layers, heads, tokens] -> [visual tokens]
        if importance.shape[0] != image.num_tokens:
            raise ValueError(
                f"the embedder sees {importance.shape[0]} tokens for an image the reranker sees as "
                f"{image.num_tokens}: its patch and merge sizes must match the reranker's"
            )
        out.append(importance)
    return out


def random_importance(image: PreparedImage, seed: int) -> torch.Tensor:
    """A random ranking seeded by (seed, image digest): the ablation baseline, still deterministic."""
    mixed = int.from_bytes(hashlib.sha256(f"{seed}:{image.digest}".encode()).digest()[:8], "little")
    generator = torch.Generator().manual_seed(mixed)
    return torch.rand(image.num_tokens, generator=generator)


def keep_mask(
    segment: Segment, visual: torch.Tensor, importances: dict[str, torch.Tensor], keep_ratio: float
) -> torch.Tensor:
    """Bool [tokens]: every text token, and each image's top ``keep_ratio`` visual tokens."""
    keep = torch.ones_like(visual)
    if keep_ratio >= 1.0 or not segment.images:
        return keep
    visual_rows = torch.nonzero(visual).squeeze(-1)  # [visual tokens], image after image
    offset = 0
    for image in segment.images:
        n = image.num_tokens
        top = torch.topk(importances[image.digest].to(visual.device), kept_count(n, keep_ratio)).indices
        drop = torch.ones(n, dtype=torch.bool, device=visual.device)
        drop[top] = False
        keep[visual_rows[offset : offset + n][drop]] = False
        offset += n
    return keep
