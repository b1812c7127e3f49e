"""Embedder-guided and random visual-token pruning."""

from __future__ import annotations

import math

import pytest
import torch
from stock_reference import pads
from transformers import Qwen3VLForConditionalGeneration

from minirerank_integrations import Candidate, MiniReranker, Query, RerankConfig
from minirerank_integrations.engine.pruning import embedder_importance, embedder_importances, kept_count


def test_batched_importances_equal_one_image_at_a_time(tiny8_path, images):
    reranker = MiniReranker.from_pretrained(tiny8_path)
    prepared = [reranker.prepare(Query(images=[image]), "q").images[0] for image in images]
    assert len({im.num_tokens for im in prepared}) > 1  # different sizes: the batch is left-padded
    features = lambda bb, im: bb.encode_image(im)  # noqa: E731
    batched = embedder_importances(reranker.backbone, prepared, features)
    for image, together in zip(prepared, batched):
        alone = embedder_importance(reranker.backbone, image, features)
        assert together.shape == alone.shape == (image.num_tokens,)
        assert torch.allclose(together, alone, atol=1e-6)
        assert alone.std() > 0  # tokens are ranked, not tied


@pytest.mark.parametrize("layers", [None, 1, 3])
def test_embedder_importance_is_the_pooled_tokens_eager_attention(tiny4_path, images, layers):
    """The full-depth guide averages every layer; a guide of k layers the first k (the rest never run)."""
    reranker = MiniReranker.from_pretrained(tiny4_path, config="dense")
    backbone = reranker.backbone
    image = images[1]
    prepared = reranker.prepare(Query(images=[image]), "q").images[0]
    ours = embedder_importance(backbone, prepared, lambda bb, im: bb.encode_image(im), layers)

    eager = Qwen3VLForConditionalGeneration.from_pretrained(tiny4_path, attn_implementation="eager").eval()
    text = (
        "<|im_start|>system\nRepresent the user's input.<|im_end|>\n<|im_start|>user\n"
        + pads(image)
        + "<|im_end|>\n<|im_start|>assistant\n"
    )
    ids = torch.tensor([backbone.tokenizer(text, add_special_tokens=False)["input_ids"]])
    pixels = backbone.image_processor(images=[image], do_resize=False, return_tensors="pt")
    with torch.no_grad():
        out = eager(
            input_ids=ids,
            pixel_values=pixels["pixel_values"],
            image_grid_thw=pixels["image_grid_thw"],
            mm_token_type_ids=(ids == backbone.image_token_id).int(),
            output_attentions=True,
        )
    attention = torch.stack([a[0, :, -1, :] for a in out.attentions])[:layers]  # [layers, heads, tokens]
    expected = attention.mean(dim=(0, 1))[ids[0] == backbone.image_token_id]
    assert ours.shape == expected.shape == (prepared.num_tokens,)
    assert torch.allclose(ours, expected, atol=1e-6)


@pytest.mark.parametrize("guide", ["embedder", "random"])
def test_kept_tokens_keep_order_positions_and_deepstack(tiny4_path, images, guide):
    reranker = MiniReranker.from_pretrained(tiny4_path, config="dense")
    side = reranker.prepare(Candidate(text="caption", images=images), "d")
    prefix, _ = reranker.segments(
        reranker.prepare(Query(text="q"), "q"), side, RerankConfig(format="vision_first"), side="document"
    )
    full = reranker.states(prefix)
    reranker.config = RerankConfig(format="vision_first", keep_ratio=0.3, pruning_guide=guide)
    pruned = reranker.states(prefix)

    n_visual = [im.num_tokens for im in side.images]
    assert (
        int(pruned.visual.sum())
        == sum(kept_count(n, 0.3) for n in n_visual)
        == sum(math.ceil(0.3 * n) for n in n_visual)
    )
    assert int((~pruned.visual).sum()) == int((~full.visual).sum())  # text is never pruned
    # Each survivor is found in the full sequence, in the same order, with its position and DeepStack feature.
    rows = [
        int(torch.nonzero((full.positions.T == p).all(1) & (full.hidden == h).all(1))[0])
        for p, h in zip(pruned.positions.T, pruned.hidden)
    ]
    assert rows == sorted(rows)
    full_visual_index = torch.cumsum(full.visual.long(), 0) - 1
    kept_visual = [int(full_visual_index[r]) for r in rows if full.visual[r]]
    for layer_feats_full, layer_feats_pruned in zip(full.deepstack, pruned.deepstack):
        assert torch.equal(layer_feats_full[kept_visual], layer_feats_pruned)
    assert pruned.next_position == full.next_position


def test_random_guide_is_deterministic_per_seed(tiny4_path, images):
    def kept(seed):
        reranker = MiniReranker.from_pretrained(
            tiny4_path,
            config=RerankConfig(format="vision_first", keep_ratio=0.5, pruning_guide="random", pruning_seed=seed),
        )
        prefix, _ = reranker.segments(
            reranker.prepare(Query(text="q"), "q"),
            reranker.prepare(Candidate(images=[images[2]]), "d"),
            side="document",
        )
        return reranker.states(prefix).positions

    assert torch.equal(kept(0), kept(0))
    assert not torch.equal(kept(0), kept(1))


def test_separate_embedder_checkpoint(tiny4_path, tiny8_path, images):
    config = RerankConfig(format="vision_first", exit_layer=3, band=(1, 3), keep_ratio=0.5)
    own = MiniReranker.from_pretrained(tiny4_path, config=config)
    guided = MiniReranker.from_pretrained(tiny4_path, config=config, embedder=tiny8_path)
    assert guided.embedder is not guided.backbone and guided.embedder.num_layers == 8
    pairs = [(Query(text="a red circle"), Candidate(images=[im])) for im in images]
    fast, naive = guided.score(pairs), guided.reference_scores(pairs)
    assert fast == pytest.approx(naive, abs=1e-4)
    assert fast != pytest.approx(own.score(pairs), abs=1e-7)  # another guide keeps other tokens


def test_pruning_changes_scores(tiny4_path, images):
    pairs = [(Query(text="a red circle"), Candidate(images=[im])) for im in images]
    base = RerankConfig(format="vision_first", exit_layer=3, band=(1, 3))
    full = MiniReranker.from_pretrained(tiny4_path, config=base).score(pairs)
    half = MiniReranker.from_pretrained(tiny4_path, config=base.model_copy(update={"keep_ratio": 0.5})).score(pairs)
    assert half != pytest.approx(full, abs=1e-6)


def test_guide_depth_is_part_of_the_prefix_key(tiny4_path, images):
    """Prefixes pruned by guides of different depths are different entries: none is served for the other."""
    shallow = MiniReranker.from_pretrained(tiny4_path, config=RerankConfig.preset("paper", 4, pruning_guide_layers=1))
    full = MiniReranker(
        shallow.backbone, RerankConfig.preset("paper", 4, pruning_guide_layers=None), store=shallow.store
    )
    doc = Candidate(images=[images[2]])
    shallow.precache([doc], progress=False)
    full.rerank("a red circle", [doc])
    assert full.counters.prefix_hits == 0 and full.counters.prefix_computations == 1
    assert full.counters.embedder_passes == 1  # its own importances, not the shallow guide's
