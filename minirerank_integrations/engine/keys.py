"""Prefix keys: the store key of a prefix binds everything that shapes its stored keys and values
(``docs/design.md``, "What a prefix key covers"). A change to any of these parts gives another key, so an
entry computed under other settings is never served."""

from __future__ import annotations

import hashlib
import json

from .config import RerankConfig
from .modeling import Backbone
from .prompts import Segment

__all__ = ["ENGINE_FORMAT_VERSION", "prefix_key"]

#: Bumped whenever what a prefix entry holds, or how it is computed, changes: old entries then miss.
ENGINE_FORMAT_VERSION = 2  # 2: SDPA attention, paper band [E // 2, E), guide layers in the key


def prefix_key(prefix: Segment, cfg: RerankConfig, backbone: Backbone, embedder: Backbone) -> str:
    """A sha256 of everything that shapes the stored prefix ``prefix`` under ``cfg``."""
    pruned = cfg.keep_ratio < 1.0
    parts = {
        "engine": ENGINE_FORMAT_VERSION,
        "model": backbone.fingerprint(),
        "dtype": str(backbone.dtype),
        "format": cfg.format,
        "band": list(cfg.band or ()),
        "keep_ratio": cfg.keep_ratio,
        "guide": cfg.pruning_guide if pruned else None,
        "guide_layers": cfg.pruning_guide_layers if pruned and cfg.pruning_guide == "embedder" else None,
        "guide_id": (cfg.pruning_seed if cfg.pruning_guide == "random" else embedder.fingerprint()) if pruned else None,
        "pixels": [cfg.min_pixels, cfg.max_pixels],
        "ids": list(prefix.input_ids),
        "images": [im.digest for im in prefix.images],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
