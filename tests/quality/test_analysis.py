"""The layer-wise analysis: exit curve, attention share and their plots, on the tiny offline checkpoint."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from stock_reference import INSTRUCTION, SYSTEM, side
from transformers import Qwen3VLForConditionalGeneration

from minirerank_integrations import ConfigError, InputError, MiniReranker, RerankConfig
from minirerank_integrations.quality.analysis import attention_share, exit_curve, plot_attention_share, plot_exit_curve
from minirerank_integrations.quality.data import FAMILIES, RerankTask, generate
from minirerank_integrations.quality.evaluation import METRICS, OVERALL, evaluate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread while this file runs: the tiny model's matrices gain nothing from more, and on a
    busy machine worker threads that spin waiting on each other make the same work many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tasks():
    """One task per family, 20 candidates each."""
    return [task for family in FAMILIES for task in generate(family, "test", 1, seed=3, candidates_per_query=20)]


@pytest.fixture(scope="module")
def dense_curve(tiny4_path, tasks):
    reranker = MiniReranker.from_pretrained(tiny4_path, config="dense")
    return reranker, exit_curve(reranker, tasks)


def test_exit_curve_has_one_entry_per_layer_and_ends_at_evaluate(dense_curve, tasks):
    reranker, curve = dense_curve
    assert sorted(curve) == [1, 2, 3, 4]
    for metrics in curve.values():
        assert set(metrics) == {*FAMILIES, OVERALL}
        assert all(set(values) == set(METRICS) for values in metrics.values())
    assert reranker.config == RerankConfig.preset("dense", 4)
    assert curve[4] == evaluate(reranker, tasks).metrics
    # Exiting early changes the scores, so at least one metric moves along the curve.
    assert any(curve[layer] != curve[4] for layer in (1, 2, 3))


def test_exit_curve_clips_the_band_and_restores_the_config(tiny4_path, tasks):
    reranker = MiniReranker.from_pretrained(tiny4_path, config="paper")
    paper = reranker.config
    assert (paper.exit_layer, paper.band) == (2, (1, 2))
    curve = exit_curve(reranker, tasks, layers=[1, 2])
    assert reranker.config == paper
    assert curve[2] == evaluate(reranker, tasks).metrics  # the entry at the config's own exit layer
    reranker.config = paper.model_copy(update={"exit_layer": 1, "band": (1, 1)})
    assert curve[1] == evaluate(reranker, tasks).metrics
    reranker.config = paper

    # An exit layer past the model's depth fails after the config was changed for layer 1: restored anyway.
    with pytest.raises(ConfigError, match="exit_layer 5"):
        exit_curve(reranker, tasks[:1], layers=[1, 5])
    assert reranker.config == paper


def _one_pair(task: RerankTask, j: int) -> RerankTask:
    return RerankTask(
        id=f"{task.id}#{j}", family=task.family, query=task.query, candidates=[task.candidates[j]], relevance=[1]
    )


def test_attention_shares_are_per_layer_fractions(tiny8_path, tasks):
    reranker = MiniReranker.from_pretrained(tiny8_path, config="paper")
    before = reranker.config
    shares = attention_share(reranker, tasks, max_pairs=6)
    assert reranker.config == before
    assert len(shares) == 8
    assert all(0.0 <= share <= 1.0 for share in shares)
    assert len(set(round(s, 6) for s in shares)) > 1, "the layers of the tiny model should differ"
    # Left-padded batches (4 + 2 pairs) give the mean of the pairs taken one at a time, round-robin over tasks.
    order = [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1)]  # (task, candidate)
    alone = [attention_share(reranker, [_one_pair(tasks[t], c)]) for t, c in order]
    assert shares == pytest.approx([sum(column) / len(alone) for column in zip(*alone)], abs=1e-5)
    with pytest.raises(InputError, match="max_pairs"):
        attention_share(reranker, tasks, max_pairs=0)


def test_attention_share_equals_the_stock_eager_attentions(tiny4_path, tasks):
    """One pair through ``Qwen3VLForConditionalGeneration`` with eager attention on the vision-first prompt
    written out by hand: the mass each suffix row puts on prefix columns, averaged over heads and rows."""
    task = next(t for t in tasks if t.family == "text_to_image")
    query, candidate = task.query, task.candidates[0]
    # The reranker's own configuration (exit 2, band (1, 2), half the visual tokens) must not matter.
    reranker = MiniReranker.from_pretrained(tiny4_path, config="paper")
    shares = attention_share(reranker, [task], max_pairs=1)

    tokenizer = reranker.backbone.tokenizer
    prefix = f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n<Document>:" + side(None, candidate.images)
    suffix = f"\n<Instruct>: {INSTRUCTION}<Query>:{query.text}<|im_end|>\n<|im_start|>assistant\n"
    prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prefix_ids + tokenizer(suffix, add_special_tokens=False)["input_ids"]])
    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny4_path, attn_implementation="eager").eval()
    pixels = reranker.backbone.image_processor(images=list(candidate.images), do_resize=False, return_tensors="pt")
    with torch.no_grad():
        out = model(
            input_ids=ids,
            pixel_values=pixels["pixel_values"],
            image_grid_thw=pixels["image_grid_thw"],
            mm_token_type_ids=(ids == model.config.image_token_id).int(),
            output_attentions=True,
        )
    p = len(prefix_ids)
    expected = [float(a[0, :, p:, :p].sum(-1).mean()) for a in out.attentions]  # a: [1, heads, t, t]
    assert len(expected) == 4
    assert shares == pytest.approx(expected, abs=1e-5)


def _assert_png(path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 200 and image.height > 100


def test_plots_are_valid_pngs(dense_curve, tmp_path):
    _, curve = dense_curve
    written = plot_exit_curve(curve, tmp_path / "plots" / "exit_curve.png")
    assert written == tmp_path / "plots" / "exit_curve.png"
    _assert_png(written)
    _assert_png(plot_attention_share([0.2, 0.5, 0.7, 0.4], tmp_path / "share.png", band=(1, 3)))
    with pytest.raises(InputError):
        plot_exit_curve({}, tmp_path / "empty.png")
    assert not (tmp_path / "empty.png").exists()
