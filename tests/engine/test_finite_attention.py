"""Every score stays finite under an attention kernel that returns NaN for a fully masked row.

Fused CUDA kernels (cuDNN, memory-efficient) may return NaN for a query row whose keys are all masked, and one
NaN row reaches every row of the batch at the next layer (``docs/design.md``, "Attention masks"). CPU kernels return 0 there,
so these tests stand in such a kernel for ``torch.nn.functional.scaled_dot_product_attention`` and check that
no path in the layer loop or the pruning embedder ever hands it such a row, in float32 and bfloat16.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from minirerank_integrations import Candidate, MiniReranker, Query, RerankConfig

#: fast path against the naive reference on probabilities, bfloat16 weights: measured here 1.2e-3 (empty band) to
#: 2.4e-3 (band before the exit) on these pairs, 3.8e-3 on gpu_check's; every layer's activations are rounded to
#: 8 mantissa bits in both paths, in a different order.
BF16_TOLERANCE = 2e-2


class NanOnEmptyRows:
    """``scaled_dot_product_attention`` that returns NaN for every query row with no key allowed (as fused CUDA
    kernels may), and counts such rows. A float mask value below -1e30 (or -inf) counts as masked."""

    def __init__(self) -> None:
        self.real = F.scaled_dot_product_attention
        self.calls = 0
        self.empty_rows = 0

    def __call__(self, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        out = self.real(
            q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, enable_gqa=enable_gqa
        )
        self.calls += 1
        if attn_mask is None:
            return out
        allowed = attn_mask if attn_mask.dtype == torch.bool else attn_mask.float() > -1e30
        empty = (~allowed.any(-1)).expand(out.shape[:-1])  # [batch, heads, queries]
        if bool(empty.any()):
            self.empty_rows += int(empty.sum())
            out = out.masked_fill(empty[..., None], float("nan"))
        return out


@pytest.fixture
def nan_kernel(monkeypatch) -> NanOnEmptyRows:
    kernel = NanOnEmptyRows()
    monkeypatch.setattr(F, "scaled_dot_product_attention", kernel)
    return kernel


def _text_query_pairs(images):
    """One text query over candidates of different lengths: images of three sizes, short and long texts."""
    a, b, c = images
    query = Query(text="a red circle on the left")
    candidates = [
        Candidate(images=[a]),
        Candidate(text="a page title", images=[b, c]),
        Candidate(text="Paris"),
        Candidate(text="Paris is the capital of France, and the seat of its government since the middle ages."),
    ]
    return [(query, candidate) for candidate in candidates]


def _image_query_pairs(images):
    """One image query over text candidates of different lengths (one prefix shared by all)."""
    query = Query(images=[images[1]])
    texts = ["seven", "two blue squares and a red circle drawn on a white page, left to right"]
    return [(query, Candidate(text=text)) for text in texts]


def _configs(depth: int) -> dict[str, RerankConfig]:
    return {
        "dense": RerankConfig.preset("dense", depth),
        "paper": RerankConfig.preset("paper", depth),
        "paper-narrow": RerankConfig.preset("paper-narrow", depth, pruning_guide_layers=None),
        "empty band": RerankConfig(format="vision_first", exit_layer=depth // 2, band=(2, 2)),
        # layers before, in and after the band, with pruning (the embedder's batch is padded too)
        "band before the exit": RerankConfig(format="vision_first", exit_layer=depth - 2, band=(1, 3), keep_ratio=0.5),
    }


def _assert_finite(scores, what: str) -> None:
    values = scores.tolist() if isinstance(scores, torch.Tensor) else list(scores)
    bad = [i for i, s in enumerate(values) if not math.isfinite(s)]  # isfinite per score: max() would skip NaN
    assert not bad, f"{what}: non-finite scores at {bad}: {values}"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("name", list(_configs(8)))
def test_no_fully_masked_row_reaches_the_kernel(tiny8_path, images, nan_kernel, dtype, name):
    config = _configs(8)[name].model_copy(update={"batch_size": 4})  # several batches, padded within each
    engine = MiniReranker.from_pretrained(tiny8_path, config=config, dtype=dtype)
    pairs = _text_query_pairs(images) + _image_query_pairs(images)
    # training's batched paths first, while the pruning embedder still ranks every image in one padded batch
    _assert_finite(engine.logits(pairs).detach(), f"{name} {dtype} batched reference (training)")
    if config.format == "vision_first":
        _assert_finite(engine.logits(pairs, fast=True).detach(), f"{name} {dtype} batched fast (training)")
    _assert_finite(engine.score(pairs), f"{name} {dtype} serving")
    assert nan_kernel.calls > 0
    assert nan_kernel.empty_rows == 0, f"{nan_kernel.empty_rows} fully masked rows reached the kernel"


def test_the_nan_kernel_catches_a_fully_masked_row():
    """The stand-in kernel does what the tests above rely on: NaN for a row with no key allowed, else the real one."""
    kernel = NanOnEmptyRows()
    q = torch.randn(1, 2, 3, 8)
    allowed = torch.ones(1, 1, 3, 3, dtype=torch.bool).tril()
    assert torch.isfinite(kernel(q, q, q, attn_mask=allowed)).all() and kernel.empty_rows == 0
    allowed[0, 0, 0] = False  # row 0 reads nothing
    out = kernel(q, q, q, attn_mask=torch.where(allowed, 0.0, torch.finfo(torch.float32).min))
    assert out[0, :, 0].isnan().all() and torch.isfinite(out[0, :, 1:]).all() and kernel.empty_rows == 2


@pytest.mark.parametrize("name", ["paper", "band before the exit"])
def test_fast_path_equals_reference_in_bfloat16(tiny8_path, images, name):
    engine = MiniReranker.from_pretrained(tiny8_path, config=_configs(8)[name], dtype="bfloat16")
    pairs = _text_query_pairs(images) + _image_query_pairs(images)
    fast, reference = engine.score(pairs), engine.reference_scores(pairs)
    _assert_finite(fast, "fast")
    _assert_finite(reference, "reference")
    worst = max(abs(f - r) for f, r in zip(fast, reference))
    assert worst <= BF16_TOLERANCE, (name, worst)
