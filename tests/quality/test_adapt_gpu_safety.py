"""``adapt`` on a GPU, checked here on CPU: the score head stays float32 under bfloat16 autocast, a non-finite
loss or gradient stops the run with a TrainingError and leaves the saved state byte for byte, and running a
step's groups a few at a time gives the gradient of the whole step."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from minirerank_integrations import MiniReranker, RerankConfig
from minirerank_integrations.errors import ConfigError, TrainingError
from minirerank_integrations.quality import adapt as adapt_module
from minirerank_integrations.quality.adapt import AdaptSettings, adapt, teacher_scores
from minirerank_integrations.quality.data import generate


@pytest.fixture(scope="module")
def groups():
    """Five labelled groups of five candidates (labels let the label term's normalisation be checked too)."""
    return generate("text_to_image", "train", 5, seed=3, candidates_per_query=5, image_size=64)


def _target(depth: int = 4) -> RerankConfig:
    return RerankConfig(format="vision_first", exit_layer=depth // 2, band=(0, 1), keep_ratio=0.5)


def test_score_head_is_float32_under_bfloat16_autocast(tiny4_path, groups):
    reranker = MiniReranker.from_pretrained(tiny4_path, config=_target())
    layer_dtypes = []
    hook = reranker.backbone.layers[0].mlp.down_proj.register_forward_hook(
        lambda module, inputs, output: layer_dtypes.append(output.dtype)
    )
    pairs = [(groups[0].query, c) for c in groups[0].candidates]
    try:
        for config in (_target(), "dense"):
            reranker.config = config
            with torch.autocast("cpu", dtype=torch.bfloat16):
                for fast in (True, False):
                    assert reranker.logits(pairs, fast=fast).dtype == torch.float32
    finally:
        hook.remove()
    assert layer_dtypes and set(layer_dtypes) == {torch.bfloat16}  # the layers themselves did run in bfloat16


def _poisoned(kind: str, from_call: int):
    """``_loss_share`` that, from its ``from_call``-th call on, returns a NaN loss or a finite loss whose
    gradient is not finite (sqrt at 0), and a record of the state folder's bytes at that moment."""
    real = adapt_module._loss_share
    seen = {"calls": 0, "state": None}

    def share(student, teacher, settings, labels, totals):
        loss = real(student, teacher, settings, labels, totals)
        seen["calls"] += 1
        if seen["calls"] < from_call:
            return loss
        if seen["state"] is None:
            seen["state"] = {p.name: p.read_bytes() for p in sorted(seen["folder"].iterdir())}
        if kind == "loss":
            return loss * float("nan")
        return loss + (student - student.detach()).abs().sqrt().sum()  # value unchanged, gradient NaN

    return share, seen


@pytest.mark.parametrize("kind", ["loss", "gradient"])
def test_a_non_finite_step_stops_the_run_and_keeps_the_saved_state(tiny4_path, groups, tmp_path, monkeypatch, kind):
    # Two passes a step (one group each): the poison comes in the first pass of the third step.
    settings = AdaptSettings(
        steps=5,
        queries_per_step=2,
        group_size=4,
        teacher_top=2,
        micro_batch_pairs=4,
        save_every=1,
        method="full",
        lr=1e-3,
    )
    reranker = MiniReranker.from_pretrained(tiny4_path, config="dense")
    share, seen = _poisoned(kind, from_call=5)
    seen["folder"] = tmp_path / "out" / "state"
    monkeypatch.setattr(adapt_module, "_loss_share", share)
    with pytest.raises(TrainingError, match=f"step 3: the {'loss' if kind == 'loss' else 'gradient norm'} is nan"):
        adapt(reranker, groups, _target(), tmp_path / "out", settings, progress=False)
    after = {p.name: p.read_bytes() for p in sorted(seen["folder"].iterdir())}
    assert seen["state"] is not None and after == seen["state"]  # the state of step 2, byte for byte
    assert not (tmp_path / "out" / "model.safetensors").exists() and not (tmp_path / "out" / "adapt.json").exists()
    saved = load_file(str(seen["folder"] / "weights.safetensors"))
    weights = dict(reranker.backbone.model.named_parameters())
    for name, value in saved.items():  # nothing of step 3 reached the weights, and no gradient is left on them
        assert torch.equal(weights[name].detach(), value), name
        assert weights[name].grad is None
    # The run resumes from that state once the cause is gone.
    monkeypatch.undo()
    resumed = adapt(tiny4_path, groups, _target(), tmp_path / "out", settings, progress=False)
    assert resumed.finished and len(resumed.losses) == 3  # steps 3, 4 and 5


@pytest.mark.parametrize("label_weight", [0.0, 1.0])
def test_micro_batches_give_the_gradient_of_the_whole_step(tiny4_path, groups, label_weight):
    base = MiniReranker.from_pretrained(tiny4_path, config="dense")
    scores, _ = teacher_scores(base, groups, progress=False)
    frozen = adapt_module._frozen_copy(base.backbone)
    student = MiniReranker(base.backbone, _target().resolve(4), embedder=frozen)
    params = [p for p in base.backbone.model.parameters() if p.requires_grad]
    autocast = torch.autocast("cpu", enabled=False)
    results = {}
    for pairs_per_pass in (100, 8, 4):  # the whole step at once; two groups and one group a pass
        settings = AdaptSettings(
            queries_per_step=3,
            grad_accum=2,
            group_size=4,
            teacher_top=2,
            micro_batch_pairs=pairs_per_pass,
            label_weight=label_weight,
            lora_dropout=0.0,
        )
        for p in params:
            p.grad = None
        loss = adapt_module._accumulate(student, groups, scores, settings, 1, autocast)
        results[pairs_per_pass] = (loss, [p.grad.clone() for p in params if p.grad is not None])
    whole_loss, whole_grads = results[100]
    assert whole_loss > 0 and sum(float(g.abs().sum()) for g in whole_grads) > 0
    scale = max(float(g.abs().max()) for g in whole_grads)
    for pairs_per_pass in (8, 4):
        loss, grads = results[pairs_per_pass]
        assert loss == pytest.approx(whole_loss, rel=1e-5)
        assert len(grads) == len(whole_grads)
        for reference, split in zip(whole_grads, grads):
            assert float((reference - split).abs().max()) <= 1e-4 * scale


def test_the_loaded_engines_device_is_used_and_another_is_refused(tiny4_path, groups, tmp_path):
    reranker = MiniReranker.from_pretrained(tiny4_path, config="dense")
    with pytest.raises(ConfigError, match="reranker to adapt is on cpu"):
        adapt(reranker, groups, _target(), tmp_path / "elsewhere", AdaptSettings(steps=1), device="meta")
    assert not (tmp_path / "elsewhere").exists()  # refused before anything was written
    settings = AdaptSettings(steps=1, queries_per_step=2, group_size=4, teacher_top=2)
    result = adapt(reranker, groups, _target(), tmp_path / "out", settings, progress=False)  # no device: its own
    assert result.finished and reranker.backbone.device.type == "cpu"
