"""The resumable state of an adaptation run: trainable weights, AdamW moments, the step, the RNG states and the
weights' moving average, written as safetensors + JSON to a fresh folder swapped in whole (:func:`save_state`),
and read back only by a run with the same settings (:func:`load_state`), which then continues exactly as the
uninterrupted run would."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from ..errors import CacheError
from .settings import AdaptSettings

__all__ = ["EMA_FILE", "RESUMABLE_CHANGES", "load_state", "save_state", "trainable"]

logger = logging.getLogger(__name__)

EMA_FILE = "ema.safetensors"  # the moving average of the trained weights, when settings.ema > 0


def trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The weights of ``model`` that learn, by name."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def save_state(
    directory: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    settings: AdaptSettings,
    averaged: dict[str, torch.Tensor] | None = None,
) -> None:
    """Trainable weights, optimizer moments, step, RNG state (and the weights' moving average), written to a
    fresh folder then swapped in."""
    from safetensors.torch import save_file

    tmp = directory.with_name(directory.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    params = trainable(model)
    save_file({k: v.detach().contiguous().cpu() for k, v in params.items()}, str(tmp / "weights.safetensors"))
    names = {id(p): k for k, p in params.items()}
    moments: dict[str, torch.Tensor] = {}
    counts: dict[str, float] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if key == "step":
                    counts[names[id(p)]] = float(value)
                else:
                    moments[f"{names[id(p)]}::{key}"] = value.detach().contiguous().cpu()
    moments["__torch_rng__"] = torch.get_rng_state()
    if torch.cuda.is_available():
        moments["__cuda_rng__"] = torch.cuda.get_rng_state()
    save_file(moments, str(tmp / "optimizer.safetensors"))
    if averaged is not None:
        save_file({k: v.contiguous().cpu() for k, v in averaged.items()}, str(tmp / EMA_FILE))
    (tmp / "state.json").write_text(
        json.dumps({"step": step, "adam_steps": counts, "settings": settings.model_dump()}, indent=1), encoding="utf-8"
    )
    if directory.exists():
        old = directory.with_name(directory.name + ".old")
        os.replace(directory, old)
        os.replace(tmp, directory)
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    else:
        os.replace(tmp, directory)


# Settings a resumed run may change: its length (the schedule's remaining decay follows), how often it saves,
# and how many pairs or teacher pairs go through the model at once (the results do not depend on those).
RESUMABLE_CHANGES = {"steps", "save_every", "micro_batch_pairs", "teacher_batch"}


def load_state(
    directory: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    settings: AdaptSettings,
    averaged: dict[str, torch.Tensor] | None = None,
) -> int:
    from safetensors.torch import load_file

    meta = json.loads((directory / "state.json").read_text(encoding="utf-8"))
    saved, current = meta.get("settings", {}), settings.model_dump()
    defaults = AdaptSettings().model_dump()  # a setting added since the state was written had its default then
    differs = sorted(k for k in current if k not in RESUMABLE_CHANGES and saved.get(k, defaults[k]) != current[k])
    if differs:
        raise CacheError(
            f"{directory}: saved state was trained with other settings ({', '.join(differs)}); start afresh"
        )
    if saved.get("steps") != settings.steps:
        logger.warning(
            "resuming at step %d with %d total steps instead of %s: the learning-rate decay is re-spread over the rest",
            meta["step"],
            settings.steps,
            saved.get("steps"),
        )
    params = trainable(model)
    weights = load_file(str(directory / "weights.safetensors"))
    if set(weights) != set(params):
        raise CacheError(f"{directory}: saved state holds other trainable weights than this run; start afresh")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(weights[name].to(p.device, p.dtype))
    moments = load_file(str(directory / "optimizer.safetensors"))
    for group in optimizer.param_groups:
        for p in group["params"]:
            name = next(k for k, q in params.items() if q is p)
            if name in meta["adam_steps"]:
                state = {
                    key.split("::", 1)[1]: value.to(p.device)
                    for key, value in moments.items()
                    if key.startswith(name + "::")
                }
                state["step"] = torch.tensor(meta["adam_steps"][name])
                optimizer.state[p] = state
    if averaged is not None:
        saved_average = load_file(str(directory / EMA_FILE))
        if set(saved_average) != set(averaged):
            raise CacheError(f"{directory}: saved moving average holds other weights than this run; start afresh")
        for name, value in averaged.items():
            value.copy_(saved_average[name].to(value.device, value.dtype))
    torch.set_rng_state(moments["__torch_rng__"])
    if "__cuda_rng__" in moments and torch.cuda.is_available():
        torch.cuda.set_rng_state(moments["__cuda_rng__"])
    return int(meta["step"])
