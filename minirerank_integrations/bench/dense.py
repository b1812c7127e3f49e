"""The dense baseline users of the official reranker run: the plain transformers forward (``Qwen3VLModel``) of
the official query-first prompt, left-padded when batched, the score read from the last token."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..engine.config import RerankConfig
from ..engine.modeling import Backbone
from ..engine.prompts import SideContent, query_first_segment

__all__ = ["official_inputs", "official_scores"]


def official_inputs(backbone: Backbone, pairs: Sequence[tuple[SideContent, SideContent]]) -> dict[str, torch.Tensor]:
    """The official prompt of each pair, left-padded into one batch, as ``Qwen3VLModel`` takes it."""
    b = backbone
    segments = [
        query_first_segment(b.tokenizer, q, d, RerankConfig().instruction, max_length=10240, special_ids=b.special_ids)
        for q, d in pairs
    ]
    longest = max(len(s.input_ids) for s in segments)
    pad = b.tokenizer.pad_token_id
    ids = torch.full((len(segments), longest), pad, dtype=torch.long)  # [pairs, longest]
    mask = torch.zeros(len(segments), longest, dtype=torch.long)  # [pairs, longest]
    for row, segment in enumerate(segments):
        n = len(segment.input_ids)
        ids[row, longest - n :] = torch.tensor(segment.input_ids)
        mask[row, longest - n :] = 1
    inputs: dict[str, torch.Tensor] = {"input_ids": ids, "attention_mask": mask}
    images = [im.image for s in segments for im in s.images]
    if images:
        out = b.image_processor(images=images, do_resize=False, return_tensors="pt")
        inputs["pixel_values"] = out["pixel_values"].to(b.visual.dtype)
        inputs["image_grid_thw"] = out["image_grid_thw"]
        inputs["mm_token_type_ids"] = (ids == b.image_token_id).long()
    return {k: v.to(b.device) for k, v in inputs.items()}


def official_scores(backbone: Backbone, pairs: Sequence[tuple[SideContent, SideContent]]) -> torch.Tensor:
    """sigmoid(logit yes - logit no) of the last token of each pair, from the plain transformers forward: [pairs]."""
    inputs = official_inputs(backbone, pairs)
    hidden = backbone.model.model(**inputs).last_hidden_state[:, -1]  # [pairs, hidden]; final norm applied
    return torch.sigmoid(hidden.float() @ backbone.score_vector().to(hidden.device))
