"""LoRA adapters on a Qwen3-VL reranker (through ``peft``), and the learning-rate schedule of every run.

One place for what training from scratch (:mod:`.training`) and adaptation (:mod:`.adapt`) share: which
modules get adapters (every attention and MLP projection of the text decoder, the paper's targets, plus the
vision blocks and mergers with ``train_vision``), adding, merging, saving and loading them, and the schedule
(linear warm-up, cosine decay to 10% of the peak).

A saved adapter is a folder: ``adapter.safetensors`` (the LoRA weights) and ``adapter.json`` (rank, alpha,
whether the vision tower was adapted, and the base checkpoint's name).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ..engine.modeling import Backbone
from ..errors import ModelLoadError
from .settings import LoraSpec

__all__ = [
    "DECODER_TARGETS",
    "LORA_CONFIG",
    "LORA_WEIGHTS",
    "VISION_TARGETS",
    "LoraSpec",
    "add_lora",
    "load_lora",
    "lr_factor",
    "lr_schedule",
    "merge_lora",
    "save_lora",
    "target_modules",
]

LORA_WEIGHTS = "adapter.safetensors"
LORA_CONFIG = "adapter.json"

#: Every attention and MLP projection of the text decoder (the paper's LoRA targets) ...
DECODER_TARGETS = r"language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
#: ... and, with ``train_vision``, the vision blocks and mergers.
VISION_TARGETS = (
    r"visual\.(blocks\.\d+\.(attn\.(qkv|proj)|mlp\.linear_fc(1|2))|(merger|deepstack_merger_list\.\d+)\.linear_fc(1|2))"
)


def target_modules(train_vision: bool) -> str:
    """The ``peft`` target pattern: the decoder's projections, and the vision tower's with ``train_vision``."""
    return rf".*({DECODER_TARGETS}|{VISION_TARGETS})" if train_vision else rf".*{DECODER_TARGETS}"


def add_lora(backbone: Backbone, spec: LoraSpec | None = None) -> None:
    """Wrap the target projections of ``backbone`` in LoRA adapters and freeze every other weight.

    Only the adapters' weights require gradients afterwards; the model keeps its train/eval mode.
    """
    from peft import LoraConfig, inject_adapter_in_model

    spec = spec or LoraSpec()
    model = backbone.model
    config = LoraConfig(
        r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=target_modules(spec.train_vision)
    )
    for p in model.parameters():
        p.requires_grad_(False)
    was_training = model.training
    inject_adapter_in_model(config, model)
    model.train(was_training)  # new dropout modules start in training mode
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
    backbone.invalidate_fingerprint()


def merge_lora(backbone: Backbone) -> None:
    """Fold every LoRA adapter into its base projection and put the plain projection back in its place.

    Serving then pays nothing for the adapters. Every weight is left frozen (``requires_grad`` False).
    """
    from peft.tuners.lora import LoraLayer

    model = backbone.model
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, module.get_base_layer())
    for p in model.parameters():
        p.requires_grad_(False)
    backbone.invalidate_fingerprint()


def save_lora(backbone: Backbone, folder: str | Path, spec: LoraSpec, *, base: str) -> Path:
    """Write the adapters of ``backbone`` (not merged) to ``folder``: weights and ``adapter.json``."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(backbone.model)
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(folder / LORA_WEIGHTS))
    meta = {"base": base, "rank": spec.rank, "alpha": spec.alpha, "train_vision": spec.train_vision}
    (folder / LORA_CONFIG).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return folder


def load_lora(backbone: Backbone, folder: str | Path) -> LoraSpec:
    """Add adapters shaped as saved in ``folder`` (by :func:`save_lora`) and load their weights (not merged).

    Raises:
        ModelLoadError: ``folder`` is not an adapter folder, or its weights name modules ``backbone`` lacks.
    """
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / LORA_WEIGHTS).is_file() or not (folder / LORA_CONFIG).is_file():
        raise ModelLoadError(f"{folder}: not a LoRA folder (needs {LORA_WEIGHTS} and {LORA_CONFIG})")
    try:
        meta = json.loads((folder / LORA_CONFIG).read_text(encoding="utf-8"))
        spec = LoraSpec(
            rank=int(meta["rank"]), alpha=int(meta["alpha"]), dropout=0.0, train_vision=bool(meta["train_vision"])
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{folder / LORA_CONFIG}: unreadable adapter settings ({exc})") from exc
    add_lora(backbone, spec)
    result = set_peft_model_state_dict(backbone.model, load_file(str(folder / LORA_WEIGHTS)))
    unexpected = list(getattr(result, "unexpected_keys", None) or [])
    if unexpected:
        raise ModelLoadError(f"{folder}: LoRA weights for modules {backbone.name!r} lacks: {unexpected[:3]}")
    backbone.invalidate_fingerprint()
    return spec


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """The learning rate at ``step`` as a share of the peak: linear warm-up over ``warmup_steps``, then a
    cosine decay to 10% at ``total_steps`` (held there after)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    done = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, done)))


def lr_schedule(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, *, start: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """:func:`lr_factor` as a scheduler stepped once per optimizer step; ``start``: steps already done (a
    resumed run continues the schedule where it stopped)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s + start, warmup_steps, total_steps))
