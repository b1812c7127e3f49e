"""The SDPA layer loop against the eager math it replaces, in float32 on a tiny real checkpoint."""

from __future__ import annotations

import pytest
import torch

from minirerank_integrations import MiniReranker
from minirerank_integrations.engine import attention as A
from minirerank_integrations.engine import layers as L


@pytest.fixture(params=["native", "fold"])
def gqa_mode(request, monkeypatch):
    monkeypatch.setattr(A, "GQA_MODE", request.param)
    return request.param


def test_attend_equals_eager_with_grouped_heads_and_masked_rows(gqa_mode):
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 5, 16, generator=generator)
    k, v = torch.randn(2, 2, 9, 16, generator=generator), torch.randn(2, 2, 9, 16, generator=generator)
    bias = torch.where(torch.rand(2, 1, 5, 9, generator=generator) > 0.3, 0.0, A.NEG)
    bias[0, 0, 0] = A.NEG  # a fully masked (padding) row stays finite, as in the eager math
    expected, _ = A.eager_attention(q, k, v, bias, 0.25)
    got = A.attend(q, k, v, bias, 0.25)
    assert torch.isfinite(got).all()
    assert (got - expected).abs().max() <= 1e-5


def _layer_inputs(reranker: MiniReranker, text: str, batch: int = 2):
    b = reranker.backbone
    ids = b.tokenizer(text, add_special_tokens=False)["input_ids"]
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, len(ids), b.layers[0].self_attn.config.hidden_size, generator=generator)
    positions = torch.arange(len(ids)).expand(3, batch, -1)
    cos, sin = L.rotary(b, x, positions)
    valid = torch.ones(batch, len(ids), dtype=torch.bool)
    valid[1, :3] = False  # left padding in the second row
    return x, cos, sin, A.causal_mask(valid)


@pytest.mark.parametrize("last_only", [False, True])
def test_layer_forward_sdpa_equals_eager(tiny4_path, gqa_mode, last_only):
    reranker = MiniReranker.from_pretrained(tiny4_path, config="dense")
    x, cos, sin, bias = _layer_inputs(reranker, "a red circle on the left of two blue squares")
    layer = reranker.backbone.layers[1]
    with torch.no_grad():
        fast, k, v, _ = L.layer_forward(layer, x, cos, sin, bias, last_only=last_only)
        eager, _, _, probs = L.layer_forward(layer, x, cos, sin, bias, last_only=last_only, want_probs=True)
        assert probs is not None and (fast - eager).abs().max() <= 1e-5
        past = (k[:, :, :4], v[:, :, :4])  # with cached keys/values in front, as band layers read them
        wide = torch.cat([bias.new_zeros(*bias.shape[:3], 4), bias], -1)
        fast, _, _, _ = L.layer_forward(layer, x, cos, sin, wide, past, last_only=last_only)
        eager, _, _, _ = L.layer_forward(layer, x, cos, sin, wide, past, last_only=last_only, want_probs=True)
    assert (fast - eager).abs().max() <= 1e-5


def test_last_token_row_equals_the_eager_probabilities(tiny8_path):
    """Pruning reads one row of probabilities per layer; it equals that row of the full eager matrix."""
    reranker = MiniReranker.from_pretrained(tiny8_path, config="dense")
    x, cos, sin, bias = _layer_inputs(reranker, "one two three four five six seven eight nine ten")
    b = reranker.backbone
    with torch.no_grad():
        for layer in b.layers[:3]:
            _, _, _, probs = L.layer_forward(layer, x, cos, sin, bias, want_probs=True)
            row = L.last_row_probs(layer, x, cos, sin, bias[:, :, -1:])
            assert (row - probs[:, :, -1]).abs().max() <= 1e-6
            x, _, _, _ = L.layer_forward(layer, x, cos, sin, bias)
