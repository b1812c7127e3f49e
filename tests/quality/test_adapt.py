"""Label-free adaptation (quality.adapt, ``minirerank adapt``) on a tiny model: the loss falls, a resumed run
equals an uninterrupted one, the outputs load, and the teacher's scores are cached on disk."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors.torch import load_file

from minirerank_integrations import MiniReranker, RerankConfig
from minirerank_integrations.cli import main
from minirerank_integrations.engine.modeling import ADAPT_FILE, CONFIG_FILE
from minirerank_integrations.errors import CacheError, ConfigError
from minirerank_integrations.quality.adapt import (
    TEACHER_FILE,
    AdaptSettings,
    _batch,
    adapt,
    adapt_loss,
    load_adapter,
    teacher_scores,
)
from minirerank_integrations.quality.data import generate, load_tasks, save_tasks


@pytest.fixture(scope="module")
def groups():
    """Six small groups without labels (labels dropped on the way through the JSONL format)."""
    return generate("text_to_image", "train", 6, seed=0, candidates_per_query=5, image_size=64)


@pytest.fixture(scope="module")
def unlabelled(groups, tmp_path_factory):
    directory = tmp_path_factory.mktemp("groups")
    save_tasks(groups, directory, labels=False)
    tasks = load_tasks(directory)
    assert not any(t.labelled for t in tasks) and all(sum(t.relevance) == 0 for t in tasks)
    return tasks


def _target(depth: int) -> RerankConfig:
    return RerankConfig(format="vision_first", exit_layer=depth // 2, band=(0, 1), keep_ratio=0.5)


def _settings(**overrides) -> AdaptSettings:
    # One group of four pairs per forward/backward pass: every run here accumulates over passes.
    base = dict(steps=4, queries_per_step=2, group_size=4, teacher_top=2, lora_dropout=0.0, save_every=2, lr=5e-3)
    base["micro_batch_pairs"] = 4
    return AdaptSettings(**(base | overrides))


def _batch_loss(reranker: MiniReranker, tasks, scores, settings) -> float:
    pairs, teacher, _, _ = _batch(tasks, scores, settings, 0, 0)
    with torch.no_grad():
        return float(adapt_loss(reranker.logits(pairs, fast=True).view(teacher.shape), teacher, settings))


@pytest.mark.parametrize("method", ["lora", "full"])
def test_one_step_lowers_the_distillation_loss_on_a_fixed_batch(tiny4_path, unlabelled, tmp_path, method):
    settings = _settings(steps=1, method=method, lr=1e-2 if method == "lora" else 1e-3)
    target = _target(4)
    base = MiniReranker.from_pretrained(tiny4_path, config="dense")
    scores, _ = teacher_scores(base, unlabelled, progress=False)
    before = _batch_loss(MiniReranker(base.backbone, target, embedder=base.backbone), unlabelled, scores, settings)
    result = adapt(tiny4_path, unlabelled, target, tmp_path, settings, progress=False)
    adapted = MiniReranker.from_pretrained(tmp_path)  # its saved configuration, the base as embedder
    after = _batch_loss(adapted, unlabelled, scores, settings)
    assert result.finished and len(result.losses) == 1
    assert result.losses[0] == pytest.approx(before, rel=1e-4)  # the step's loss is the loss of that batch
    assert after < before


def test_resume_equals_an_uninterrupted_run(tiny4_path, unlabelled, tmp_path):
    target = _target(4)
    whole = adapt(tiny4_path, unlabelled, target, tmp_path / "whole", _settings(), progress=False)
    torch.manual_seed(1234)  # the global RNG state does not matter: a run draws from its own seed
    first = adapt(tiny4_path, unlabelled, target, tmp_path / "split", _settings(), stop_after=2, progress=False)
    assert not first.finished and not (tmp_path / "split" / "model.safetensors").exists()
    assert json.loads((tmp_path / "split" / "state" / "state.json").read_text())["step"] == 2
    second = adapt(tiny4_path, unlabelled, target, tmp_path / "split", _settings(), progress=False)
    assert second.teacher_cache_hit and second.finished and len(second.losses) == 2  # steps 2 and 3 only
    assert json.loads((tmp_path / "split" / ADAPT_FILE).read_text())["teacher_cache_hit"]
    assert not json.loads((tmp_path / "whole" / ADAPT_FILE).read_text())["teacher_cache_hit"]
    assert second.losses == pytest.approx(whole.losses[2:], rel=1e-5)
    a = load_file(str(tmp_path / "whole" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "model.safetensors"))
    assert set(a) == set(b)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)
    with pytest.raises(CacheError, match="other settings"):  # a state is resumed only by the run that wrote it
        adapt(tiny4_path, unlabelled, target, tmp_path / "split", _settings(lr=1e-3), progress=False)
    start = load_file(str(tiny4_path / "model.safetensors"))
    assert any(not torch.equal(start[n], a[n]) for n in a if n in start)  # training did change weights


def test_ema_serves_the_moving_average_of_the_steps_and_resumes_it(tiny4_path, unlabelled, tmp_path):
    decay, target = 0.6, _target(4)
    settings = _settings(steps=3, method="full", lr=1e-3, ema=decay)
    reranker = MiniReranker.from_pretrained(tiny4_path, config="dense")
    model = reranker.backbone.model
    average = {n: p.detach().clone() for n, p in model.named_parameters()}  # the average starts at the base

    def follow(step: int, loss: float) -> None:  # after each optimizer step: fold the new weights in
        for n, p in model.named_parameters():
            average[n].mul_(decay).add_(p.detach(), alpha=1 - decay)

    adapt(reranker, unlabelled, target, tmp_path / "whole", settings, progress=False, on_step=follow)
    last = load_file(str(tmp_path / "whole" / "state" / "weights.safetensors"))  # the state keeps the last step
    served = dict(model.named_parameters())
    assert any(not torch.equal(last[n], served[n].detach()) for n in last)
    for n, p in served.items():
        torch.testing.assert_close(p.detach(), average[n], rtol=1e-5, atol=1e-6)
    # Interrupted after one step and resumed: the average is read back, the served weights are the same.
    adapt(tiny4_path, unlabelled, target, tmp_path / "split", settings, stop_after=1, progress=False)
    adapt(tiny4_path, unlabelled, target, tmp_path / "split", settings, progress=False)
    a = load_file(str(tmp_path / "whole" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "model.safetensors"))
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)
    for bad in (-0.1, 1.0):
        with pytest.raises(ConfigError, match="ema"):
            AdaptSettings(ema=bad)


@pytest.fixture(scope="module")
def adapted_folder(tiny4_path, unlabelled, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapted")
    adapt(tiny4_path, unlabelled, _target(4), out, _settings(steps=2), progress=False)
    return out


def test_output_folder_loads_with_its_configuration_and_embedder(tiny4_path, adapted_folder, unlabelled, caplog):
    with caplog.at_level(logging.WARNING):
        reranker = MiniReranker.from_pretrained(adapted_folder)
    assert not [r for r in caplog.records if "not validated" in r.getMessage()]
    assert reranker.config == _target(4).resolve(4)
    record = json.loads((adapted_folder / ADAPT_FILE).read_text())
    assert record["embedder"] == str(tiny4_path.resolve()) and record["teacher_cache_bytes"] > 0
    families = [t.family for t in unlabelled]
    assert record["family_mix"] == {f: families.count(f) for f in set(families)}
    base = MiniReranker.from_pretrained(tiny4_path, config="dense")
    assert reranker.embedder.fingerprint() == base.backbone.fingerprint()  # the base ranks visual tokens
    assert reranker.backbone.fingerprint() != base.backbone.fingerprint()
    # The LoRA folder on top of the base weights is the same reranker.
    on_base = load_adapter(tiny4_path, adapted_folder / "lora")
    assert on_base.config == reranker.config
    pairs = [(unlabelled[0].query, c) for c in unlabelled[0].candidates]
    assert on_base.score(pairs) == pytest.approx(reranker.score(pairs), abs=1e-5)
    assert (adapted_folder / "lora" / "adapter.safetensors").stat().st_size < (
        adapted_folder / "model.safetensors"
    ).stat().st_size


def test_teacher_cache_is_reused_and_refuses_other_tasks(tiny4_path, unlabelled, tmp_path):
    teacher = MiniReranker.from_pretrained(tiny4_path, config="dense")
    path = tmp_path / TEACHER_FILE
    scores, hit = teacher_scores(teacher, unlabelled, path, progress=False)
    again, hit_again = teacher_scores(teacher, unlabelled, path, progress=False)
    assert not hit and hit_again
    for a, b in zip(scores, again):
        assert torch.equal(a, b)
    direct = teacher.logits([(unlabelled[1].query, c) for c in unlabelled[1].candidates])
    torch.testing.assert_close(scores[1], direct.float(), rtol=1e-5, atol=1e-5)
    with pytest.raises(CacheError, match="tasks"):
        teacher_scores(teacher, unlabelled[:3], path, progress=False)


def test_cli_adapt_from_documents_and_retrieved_ids(tiny4_path, groups, tmp_path, capsys):
    docs = tmp_path / "docs"
    docs.mkdir()
    lines = []
    for t, task in enumerate(groups[:3]):
        ids = []
        for j, candidate in enumerate(task.candidates):
            name = f"d{t}_{j}.png"
            candidate.images[0].save(docs / name)
            ids.append(name)
        lines.append(json.dumps({"id": f"q{t}", "text": task.query.text, "candidates": ids}))
    (tmp_path / "queries.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    target = json.dumps(_target(4).model_dump(mode="json"))
    argv = ["adapt", "--model", str(tiny4_path), "--documents", str(docs), "--queries", str(tmp_path / "queries.jsonl")]
    argv += ["--config", target, "--out", str(out), "--steps", "2", "--queries-per-step", "2", "--group-size", "4"]
    assert main([*argv, "--temperature", "0.5"]) == 0
    printed = capsys.readouterr().out
    assert "checkpoint:" in printed and "teacher scores: computed" in printed
    assert json.loads((out / CONFIG_FILE).read_text())["band"] == [0, 1]
    assert json.loads((out / ADAPT_FILE).read_text())["settings"]["temperature"] == 0.5
    assert main([*argv[:2], str(tmp_path / "nowhere"), *argv[3:]]) == 2  # a missing model: one-line error


def test_temperature_sharpens_the_teacher_order_and_must_be_positive():
    teacher = torch.tensor([[4.0, 2.0, 0.0, -2.0]])
    swapped_top = torch.tensor([[2.0, 4.0, 0.0, -2.0]])  # the teacher's first two swapped
    swapped_tail = torch.tensor([[4.0, 2.0, -2.0, 0.0]])  # its last two swapped
    for t in (0.5, 1.0, 2.0):
        settings = AdaptSettings(score_weight=0.0, temperature=t)
        assert float(adapt_loss(teacher, teacher, settings)) == pytest.approx(0.0, abs=1e-6)
    # The share of the loss that comes from the top of the order grows as the temperature falls.
    share = {}
    for t in (0.5, 2.0):
        settings = AdaptSettings(score_weight=0.0, temperature=t)
        top, tail = (float(adapt_loss(s, teacher, settings)) for s in (swapped_top, swapped_tail))
        share[t] = top / (top + tail)
    assert share[0.5] > share[2.0] > 0.5
    for bad in (0.0, -1.0):
        with pytest.raises(ConfigError, match="temperature"):
            AdaptSettings(temperature=bad)
