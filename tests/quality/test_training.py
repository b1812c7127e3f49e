"""Supervised training: the loss goes down, LoRA adapters (quality.lora) save/load/merge and only they move,
the step matches inference, and the schedule and LoRA targets are written once for training and adaptation."""

from __future__ import annotations

import random

import pytest
import torch

from minirerank_integrations import MiniReranker
from minirerank_integrations.quality.data import generate
from minirerank_integrations.quality.data.render import render_scene
from minirerank_integrations.quality.lora import LoraSpec, add_lora, load_lora, lr_factor, merge_lora, save_lora
from minirerank_integrations.quality.training import (
    TrainSettings,
    group_loss,
    sample_group,
    save_checkpoint,
    train,
    training_step,
    vision_warm_start,
)


@pytest.fixture(scope="module")
def tasks():
    return generate("text_to_image", "train", 3, candidates_per_query=20) + generate("image_to_text", "train", 3)


def _fixed_batch(tasks, size=6):
    rng = random.Random(0)
    pairs, labels = [], []
    for task in tasks:
        group = sample_group(task, size, 0.5, rng)
        pairs += [(task.query, task.candidates[i]) for i in group]
        labels.append([int(task.relevance[i] > 0) for i in group])
    return pairs, labels


@pytest.mark.parametrize("config", ["dense", "paper"])
def test_steps_on_a_fixed_batch_reduce_the_loss(tiny4_path, tasks, config):
    reranker = MiniReranker.from_pretrained(tiny4_path, config=config)
    pairs, labels = _fixed_batch(tasks)
    settings = TrainSettings(lr=3e-3)
    optimizer = torch.optim.AdamW(reranker.backbone.model.parameters(), lr=settings.lr)
    with torch.no_grad():
        before = float(group_loss(reranker.logits(pairs).view(len(labels), -1), torch.tensor(labels), settings))
    for _ in range(6):
        training_step(reranker, optimizer, pairs, labels, settings)
    with torch.no_grad():
        after = float(group_loss(reranker.logits(pairs).view(len(labels), -1), torch.tensor(labels), settings))
    assert after < before - 0.05, (before, after)


def test_training_logits_are_the_served_scores(tiny4_path, tasks):
    reranker = MiniReranker.from_pretrained(tiny4_path, config="paper")
    pairs, _ = _fixed_batch(tasks)
    trained_view = torch.sigmoid(reranker.logits(pairs)).detach()
    assert trained_view.tolist() == pytest.approx(reranker.score(pairs), abs=1e-4)
    reranker.config = "dense"  # the shared-start shortcut of query-first training equals plain scoring
    assert torch.sigmoid(reranker.logits(pairs)).detach().tolist() == pytest.approx(reranker.score(pairs), abs=1e-5)


def test_sample_group_mixes_positives_and_hard_negatives(tasks):
    from minirerank_integrations.quality.data import attribute_distance

    task = tasks[0]
    group = sample_group(task, 8, 1.0, random.Random(1))
    assert len(group) == len(set(group)) == 8
    assert any(task.relevance[i] > 0 for i in group)
    negatives = [i for i in group if task.relevance[i] == 0]
    assert all(attribute_distance(task.candidate_attributes[i], task.query_attributes) == 1 for i in negatives)


def test_lora_trains_only_adapters_and_saves_loads_merges(tiny4_path, tasks, tmp_path):
    reranker = MiniReranker.from_pretrained(tiny4_path, config="paper")
    base = {k: v.clone() for k, v in reranker.backbone.model.state_dict().items()}
    spec = LoraSpec(rank=4, alpha=8)
    add_lora(reranker.backbone, spec)
    report = train(
        reranker, tasks, TrainSettings(steps=2, queries_per_step=2, candidates_per_query=6, lr=1e-2), progress=False
    )
    assert len(report.losses) == 2
    for name, value in reranker.backbone.model.state_dict().items():
        if "lora_" not in name:
            assert torch.equal(value, base[name.replace(".base_layer", "")]), name
    pairs, _ = _fixed_batch(tasks)
    adapted = reranker.score(pairs)
    plain = MiniReranker.from_pretrained(tiny4_path, config="paper").score(pairs)
    assert adapted != pytest.approx(plain, abs=1e-6)  # the adapters changed something

    folder = save_lora(reranker.backbone, tmp_path / "adapter", spec, base=str(tiny4_path))
    assert sum(f.stat().st_size for f in folder.iterdir()) < 200_000
    reloaded = MiniReranker.from_pretrained(tiny4_path, config="paper")
    assert load_lora(reloaded.backbone, folder) == spec.model_copy(update={"dropout": 0.0})
    assert reloaded.score(pairs) == pytest.approx(adapted, abs=1e-6)

    fingerprint = reranker.backbone.fingerprint()
    merge_lora(reranker.backbone)
    assert reranker.backbone.fingerprint() != fingerprint  # merged weights: old prefixes must not match
    assert not any("lora_" in name for name, _ in reranker.backbone.model.named_parameters())
    assert reranker.score(pairs) == pytest.approx(adapted, abs=1e-5)
    merged_dir = save_checkpoint(reranker, tmp_path / "merged")
    assert MiniReranker.from_pretrained(merged_dir, config="paper").score(pairs) == pytest.approx(adapted, abs=1e-5)


def test_vision_warm_start_learns_attributes_and_leaves_the_decoder(tiny4_path):
    reranker = MiniReranker.from_pretrained(tiny4_path, config="dense")
    labels = [{"colour": c, "shape": s} for c in ("red", "blue", "green") for s in ("circle", "square")]
    rng = random.Random(0)
    images = [render_scene(a | {"count": "one", "position": "left"}, rng, 64) for a in labels]
    decoder = {n: p.detach().clone() for n, p in reranker.backbone.model.named_parameters() if "visual" not in n}
    fingerprint = reranker.backbone.fingerprint()
    report = vision_warm_start(reranker, images, labels, steps=25, batch_size=len(images), lr=3e-3)
    assert len(report.losses) == 25
    assert report.losses[-1] < 0.5 * report.losses[0], report.losses
    for name, p in reranker.backbone.model.named_parameters():
        if "visual" not in name:
            assert torch.equal(p, decoder[name]), f"{name} moved"
    assert reranker.backbone.fingerprint() != fingerprint  # stored prefixes of the old weights must not match


@pytest.mark.parametrize(
    "fields",
    [
        {"preset": "paper"},
        {"format": "vision_first", "exit_layer": 3, "band": (1, 3), "keep_ratio": 0.6, "pruning_guide": "random"},
        {"format": "vision_first", "band": (0, 0)},
    ],
    ids=["paper", "band-1-3", "no-band"],
)
def test_fast_training_path_equals_the_reference_with_gradients(tiny8_path, tasks, fields):
    from minirerank_integrations import RerankConfig

    reranker = MiniReranker.from_pretrained(tiny8_path)
    preset = fields.pop("preset", None)
    reranker.config = RerankConfig.preset(preset, 8) if preset else RerankConfig(**fields)
    pairs, _ = _fixed_batch(tasks)  # groups share a query: suffixes (t2i) and prefixes (i2t) repeat
    params = list(reranker.backbone.model.parameters())
    grads, values = [], []
    for fast in (False, True):
        logits = reranker.logits(pairs, fast=fast)
        values.append(logits.detach())
        grads.append(torch.autograd.grad(logits.square().sum(), params, allow_unused=True))
    assert values[1].tolist() == pytest.approx(values[0].tolist(), abs=1e-4)
    assert values[0].std() > 1e-3  # the pairs are told apart, so equality is not trivial
    scale = max(float(g.abs().max()) for g in grads[0] if g is not None)
    for reference, fast in zip(*grads):
        if reference is None or fast is None:
            assert (reference is None or not reference.any()) and (fast is None or not fast.any())
            continue
        assert float((reference - fast).abs().max()) <= 1e-3 * scale
    assert torch.allclose(torch.sigmoid(values[1]), torch.tensor(reranker.score(pairs)), atol=1e-4)


def test_schedule_warms_up_then_decays_to_a_tenth():
    factors = [lr_factor(step, 4, 20) for step in range(24)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factors[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[4:], factors[5:]))  # then it only falls ...
    assert factors[20] == pytest.approx(0.1) and factors[23] == pytest.approx(0.1)  # ... to 10%, held there


def test_training_and_adaptation_share_one_copy_of_the_lora_targets_and_schedule():
    from pathlib import Path

    import minirerank_integrations
    from minirerank_integrations.quality import adapt, lora, training

    package = Path(minirerank_integrations.__file__).parent
    written = {
        marker: sorted(p.relative_to(package).as_posix() for p in package.rglob("*.py") if marker in p.read_text())
        for marker in (r"self_attn\.(q|k|v|o)_proj", "inject_adapter_in_model(", "math.cos(")
    }
    assert written == dict.fromkeys(written, ["quality/lora.py"])
    assert training.lr_schedule is adapt.lr_schedule is lora.lr_schedule
    assert not hasattr(training, "adaptation_settings") and not hasattr(training, "add_lora")
