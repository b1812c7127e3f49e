"""``SegmentEncoder``: a segment's decoder inputs (embeddings, M-RoPE positions, DeepStack features) with its
pruned visual tokens dropped. It owns the vision-feature cache of one call and the importance LRU shared
across calls, so every user of the engine (serving, training, analysis) embeds a segment the same way."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch

from ..errors import ConfigError
from .config import RerankConfig
from .counters import WorkCounters
from .modeling import Backbone, SegmentStates
from .prompts import PreparedImage, Segment
from .pruning import embedder_importances, keep_mask, random_importance
from .video import VideoGroup

__all__ = ["FeatureCache", "SegmentEncoder"]

#: Vision features of one call, by (backbone identity, image digest): an image recurring in a call is encoded once.
FeatureCache = dict

_MAX_IMPORTANCES = 4096  # importances kept across calls (a few KB each)


class SegmentEncoder:
    """Embeds segments for ``backbone``, ranking visual tokens with ``embedder`` when pruning."""

    def __init__(self, backbone: Backbone, embedder: Backbone, counters: WorkCounters) -> None:
        self.backbone = backbone
        self.embedder = embedder
        self.counters = counters
        self._importance: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    def check(self, cfg: RerankConfig) -> None:
        """Refuse a configuration whose pruning guide reads more layers than the embedder has."""
        depth = self.embedder.num_layers
        if cfg.keep_ratio < 1 and cfg.pruning_guide == "embedder" and (cfg.pruning_guide_layers or 0) > depth:
            raise ConfigError(
                f"pruning_guide_layers {cfg.pruning_guide_layers} is more than the embedder's {depth} layers; "
                f"use at most {depth}, or None for all of them"
            )

    @property
    def cached_importances(self) -> int:
        """How many importance rankings are held across calls."""
        return len(self._importance)

    def features(self, backbone: Backbone, image: PreparedImage, cache: FeatureCache | None = None):
        """Vision features of ``image`` under ``backbone``, from ``cache`` when this call already encoded it.
        A video's temporal group is encoded with its whole video, and every group of it is cached."""
        key = (id(backbone), image.digest)
        if cache is not None and key in cache:
            return cache[key]
        self.counters.vision_encodings += 1
        if isinstance(image, VideoGroup):
            cache = {} if cache is None else cache
            for group, feats in zip(image.video.groups, backbone.encode_video(image.video)):
                cache[(id(backbone), group.digest)] = feats
            return cache[key]
        feats = backbone.encode_image(image)
        if cache is not None:
            cache[key] = feats
        return feats

    def encode_all(self, images: Sequence[PreparedImage], cache: FeatureCache) -> None:
        """Encode the distinct ``images`` missing from ``cache`` in one vision call (a training step's images)."""
        unique = list({im.digest: im for im in images if (id(self.backbone), im.digest) not in cache}.values())
        for image, feats in zip(unique, self.backbone.encode_images(unique)):
            cache[(id(self.backbone), image.digest)] = feats
        self.counters.vision_encodings += len({getattr(im, "video", im) for im in unique})  # a video counts once

    def _guide(self, cfg: RerankConfig) -> tuple:
        """What ranks the tokens: the embedder's weight digest, not its identity (importances computed before its
        weights changed, by training or a merged adapter, must not be reused), or the random seed."""
        if cfg.pruning_guide == "random":
            return ("random", cfg.pruning_seed, None)
        return (cfg.pruning_guide, self.embedder.fingerprint(), cfg.pruning_guide_layers)

    def _importance_key(self, image: PreparedImage, guide: tuple) -> tuple:
        return (*guide, image.digest)

    @torch.no_grad()  # pruning ranks tokens; it is not trained through
    def importance(self, image: PreparedImage, cache: FeatureCache, cfg: RerankConfig) -> torch.Tensor:
        """The importance of each visual token of ``image`` under ``cfg``'s pruning guide."""
        key = self._importance_key(image, self._guide(cfg))
        if key not in self._importance:
            self.prefetch_importances([image], cache, cfg)
        return self._importance[key]

    @torch.no_grad()
    def prefetch_importances(self, images: Sequence[PreparedImage], cache: FeatureCache, cfg: RerankConfig) -> None:
        """Compute the missing importances of ``images``, with one batched embedder pass."""
        guide = self._guide(cfg)  # the fingerprint checked once per call, not once per image
        missing = [im for im in images if self._importance_key(im, guide) not in self._importance]
        if not missing:
            return
        if cfg.pruning_guide == "random":
            values = [random_importance(image, cfg.pruning_seed) for image in missing]
        else:
            self.counters.embedder_passes += len(missing)
            values = embedder_importances(
                self.embedder, missing, lambda bb, im: self.features(bb, im, cache), cfg.pruning_guide_layers
            )
        for image, value in zip(missing, values):
            self._importance[self._importance_key(image, guide)] = value
        while len(self._importance) > _MAX_IMPORTANCES:
            self._importance.popitem(last=False)

    def states(self, segment: Segment, cfg: RerankConfig, cache: FeatureCache | None = None) -> SegmentStates:
        """Embed ``segment`` (encoding its images) and drop the visual tokens ``cfg`` prunes."""
        cache = {} if cache is None else cache
        feats = {im.digest: self.features(self.backbone, im, cache) for im in segment.images}
        states = self.backbone.embed(segment, feats)
        if cfg.keep_ratio < 1.0 and segment.images:
            importances = {im.digest: self.importance(im, cache, cfg) for im in segment.images}
            states = states.select(keep_mask(segment, states.visual, importances, cfg.keep_ratio))
        return states
