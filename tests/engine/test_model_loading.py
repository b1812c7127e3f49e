"""Loading checkpoints through the same from_pretrained path real ones use."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2Config

from minirerank_integrations import MiniReranker, ModelLoadError
from minirerank_integrations.tiny_checkpoint import build_tiny_checkpoint


def test_loads_a_saved_checkpoint_with_yes_no_from_its_tokenizer(tiny8_path):
    reranker = MiniReranker.from_pretrained(tiny8_path, config="paper")
    backbone = reranker.backbone
    vocab = backbone.tokenizer.get_vocab()
    assert (backbone.yes_id, backbone.no_id) == (vocab["yes"], vocab["no"])
    assert backbone.num_layers == 8 and len(backbone.layers) == 8
    assert backbone.model.config.vision_config.depth >= 3  # DeepStack layers exercised
    assert len(backbone.model.config.vision_config.deepstack_visual_indexes) == 3


def test_not_a_qwen3_vl_checkpoint_is_refused(tmp_path):
    Qwen2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="qwen2"):
        MiniReranker.from_pretrained(tmp_path)


def test_missing_checkpoint_is_a_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="nowhere"):
        MiniReranker.from_pretrained(tmp_path / "nowhere")


def test_unknown_dtype_is_refused(tiny4_path):
    with pytest.raises(ModelLoadError, match="float8"):
        MiniReranker.from_pretrained(tiny4_path, dtype="float8")


def test_bfloat16_weights_still_score_in_float32(tiny4_path, images):
    from minirerank_integrations import Candidate

    pairs = [("a red circle", Candidate(images=[im])) for im in images] + [("fox", "The quick brown fox")]
    fp32 = MiniReranker.from_pretrained(tiny4_path, config="paper").score(pairs)
    bf16 = MiniReranker.from_pretrained(tiny4_path, config="paper", dtype="bfloat16")
    assert bf16.backbone.dtype == torch.bfloat16
    scores = bf16.score(pairs)
    assert all(isinstance(s, float) for s in scores)
    assert scores == pytest.approx(fp32, abs=0.05)


def test_different_weights_change_the_fingerprint(tmp_path):
    a = MiniReranker.from_pretrained(build_tiny_checkpoint(tmp_path / "a", seed=0))
    b = MiniReranker.from_pretrained(build_tiny_checkpoint(tmp_path / "b", seed=1))
    again = MiniReranker.from_pretrained(tmp_path / "a")
    assert a.backbone.fingerprint() == again.backbone.fingerprint()
    assert a.backbone.fingerprint() != b.backbone.fingerprint()
