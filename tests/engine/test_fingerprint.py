"""The model fingerprint (engine/fingerprint.py): exact per tensor, current without being told, and blind to the
path a checkpoint was read from."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from minirerank_integrations.engine.fingerprint import config_identity, tensor_digest
from minirerank_integrations.engine.modeling import load_backbone

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.int8, torch.int64, torch.bool]


def _changed(tensor: torch.Tensor, index: int) -> torch.Tensor:
    """``tensor`` with element ``index`` set to another value of its dtype."""
    flat = tensor.clone().reshape(-1)
    if tensor.dtype == torch.bool:
        flat[index] = ~flat[index]
    elif tensor.dtype.is_floating_point:
        flat[index] = flat[index] + 1 if flat[index].abs() < 1e3 else 0.0
    else:
        flat[index] = flat[index] + 1 if flat[index] < 100 else 0
    return flat.reshape(tensor.shape)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("on_device", [False, True], ids=["cpu-xxh3", "device-modular"])
def test_every_single_element_change_changes_the_digest(dtype, on_device):
    generator = torch.Generator().manual_seed(0)
    # 13 elements: an odd byte count for 1-byte dtypes (padding), and several chunks of 2 words each.
    base = (torch.rand(13, generator=generator) * 10).to(dtype) if dtype != torch.bool else torch.rand(13) > 0.5
    reference = tensor_digest(base, on_device=on_device, chunk=2)
    assert tensor_digest(base.clone(), on_device=on_device, chunk=2) == reference  # content, not identity
    for index in range(base.numel()):
        assert tensor_digest(_changed(base, index), on_device=on_device, chunk=2) != reference, index


@pytest.mark.parametrize("on_device", [False, True], ids=["cpu-xxh3", "device-modular"])
def test_shape_dtype_and_chunk_order_are_part_of_the_digest(on_device):
    words = torch.arange(16, dtype=torch.int32)
    digest = tensor_digest(words, on_device=on_device, chunk=4)
    assert tensor_digest(words.reshape(4, 4), on_device=on_device, chunk=4) != digest
    assert tensor_digest(words.view(torch.float32), on_device=on_device, chunk=4) != digest
    swapped = torch.cat([words[4:8], words[:4], words[8:]])  # two chunks exchanged
    assert tensor_digest(swapped, on_device=on_device, chunk=4) != digest
    strided = torch.arange(32, dtype=torch.int32)[::2]  # not contiguous: digested by value
    assert tensor_digest(strided, on_device=on_device) == tensor_digest(strided.contiguous(), on_device=on_device)


def test_the_fingerprint_follows_in_place_changes_on_its_own(tiny4_path):
    backbone = load_backbone(tiny4_path)
    original = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    first = backbone.fingerprint()
    assert backbone.fingerprint() == first

    weight = backbone.layers[0].self_attn.q_proj.weight
    with torch.no_grad():
        weight[3, 5] += 0.25  # one element, in place
    edited = backbone.fingerprint()
    assert edited != first

    backbone.model.load_state_dict(original)
    assert backbone.fingerprint() == first  # the same values again: the same fingerprint

    shifted = {k: (v + 0.01 if v.is_floating_point() else v) for k, v in original.items()}
    backbone.model.load_state_dict(shifted)
    assert backbone.fingerprint() not in (first, edited)

    backbone.model.load_state_dict(original)
    layer = backbone.layers[1].mlp.down_proj
    layer.weight = torch.nn.Parameter(layer.weight.detach() * 2)  # replaced by assignment
    assert backbone.fingerprint() != first
    layer.weight.data = original["model.language_model.layers.1.mlp.down_proj.weight"].clone()  # .data = ...
    assert backbone.fingerprint() == first

    buffer = backbone.rotary.inv_freq  # a non-persistent buffer shapes every position too
    with torch.no_grad():
        buffer[0] += 1.0
    assert backbone.fingerprint() != first
    with torch.no_grad():
        buffer[0] -= 1.0
    backbone.invalidate_fingerprint()  # kept for callers; harmless
    assert backbone.fingerprint() == first


def test_the_fingerprint_covers_the_image_processor_settings(tiny4_path):
    backbone = load_backbone(tiny4_path)
    first = backbone.fingerprint()
    for setting, value in [("image_mean", [0.4, 0.5, 0.5]), ("image_std", [0.5, 0.25, 0.5]), ("do_normalize", False)]:
        saved = getattr(backbone.image_processor, setting)
        setattr(backbone.image_processor, setting, value)
        assert backbone.fingerprint() != first, setting
        setattr(backbone.image_processor, setting, saved)
        assert backbone.fingerprint() == first, setting
    assert '"image_mean"' in backbone.preprocessing_identity()


def test_the_same_checkpoint_under_another_path_spelling_has_the_same_fingerprint(tiny4_path, tmp_path):
    folder = tmp_path / "ckpts" / "A"
    shutil.copytree(tiny4_path, folder)
    (tmp_path / "link").symlink_to(folder, target_is_directory=True)
    spellings = [str(folder), str(folder) + "/", str(tmp_path / "ckpts" / "." / "A"), str(tmp_path / "link")]
    backbones = [load_backbone(name) for name in spellings]
    assert len({b.fingerprint() for b in backbones}) == 1
    assert backbones[0].fingerprint() == load_backbone(tiny4_path).fingerprint()  # a copy holds the same model
    assert str(folder) not in config_identity(backbones[0].model.config)
    full = json.loads(backbones[0].model.config.to_json_string(use_diff=False))
    assert full["_name_or_path"].rstrip("/").endswith(("A", "link"))  # what the old fingerprint hashed
