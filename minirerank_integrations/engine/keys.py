"""Prefix keys: the store key of a prefix binds everything that shapes its stored keys and values
(``docs/design.md``, "What a prefix key covers"). A change to any of these parts gives another key, so an
entry computed under other settings is never served."""

from __future__ import annotations

import hashlib
import json

from .config import RerankConfig
from .modeling import Backbone
from .prompts import Segment

__all__ = ["ENGINE_FORMAT_VERSION", "PrefixKeyer", "prefix_key"]

#: Bumped whenever what a prefix entry holds, or how it is computed, changes: old entries then miss.
#: 2: SDPA attention, paper band [E // 2, E), guide layers in the key.
#: 3: images keyed by their source bytes (xxh3-128) and the resize bounds instead of a sha256 of the resized
#: pixels; the model part covers the image processor's settings and no longer the path a checkpoint was read from.
ENGINE_FORMAT_VERSION = 3


class PrefixKeyer:
    """Store keys of prefixes under one configuration and one state of the model (and of the embedder when it
    guides pruning): the parts shared by every prefix are digested once, the per-prefix ones per call of this."""

    def __init__(self, cfg: RerankConfig, backbone: Backbone, embedder: Backbone) -> None:
        pruned = cfg.keep_ratio < 1.0
        shared = {
            "engine": ENGINE_FORMAT_VERSION,
            # Weights, buffers, model config and image processor settings (Backbone.fingerprint).
            "model": backbone.fingerprint(),
            "dtype": str(backbone.dtype),
            "format": cfg.format,
            "band": list(cfg.band or ()),
            "keep_ratio": cfg.keep_ratio,
            "guide": cfg.pruning_guide if pruned else None,
            "guide_layers": cfg.pruning_guide_layers if pruned and cfg.pruning_guide == "embedder" else None,
            "guide_id": (cfg.pruning_seed if cfg.pruning_guide == "random" else embedder.fingerprint())
            if pruned
            else None,
            "pixels": [cfg.min_pixels, cfg.max_pixels],
        }
        self._shared = json.dumps(shared, sort_keys=True).encode()

    def __call__(self, prefix: Segment) -> str:
        """A sha256 of the shared parts, the prefix's token ids and its images' digests."""
        digest = hashlib.sha256(self._shared)
        digest.update(b"\0")
        own = {"ids": list(prefix.input_ids), "images": [im.digest for im in prefix.images]}
        digest.update(json.dumps(own, sort_keys=True).encode())
        return digest.hexdigest()


def prefix_key(prefix: Segment, cfg: RerankConfig, backbone: Backbone, embedder: Backbone) -> str:
    """The store key of ``prefix`` under ``cfg``: a sha256 of everything that shapes its stored keys and values
    (``docs/design.md``, "What a prefix key covers"). Keying many prefixes, :class:`PrefixKeyer` digests the
    shared parts once."""
    return PrefixKeyer(cfg, backbone, embedder)(prefix)
