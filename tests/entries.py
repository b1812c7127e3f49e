"""Deterministic prefix entries for the store tests."""

from __future__ import annotations

import torch

from minirerank_integrations.store import PrefixEntry


def entry_for(seed: int, shape: tuple[int, int, int, int] = (1, 2, 8, 16), dtype: str = "float32") -> PrefixEntry:
    """A deterministic entry: the same seed gives the same tensors in any process."""
    generator = torch.Generator().manual_seed(seed)
    keys = torch.randn(shape, generator=generator).to(getattr(torch, dtype))
    values = torch.randn(shape, generator=generator).to(getattr(torch, dtype))
    return PrefixEntry(keys=keys, values=values, length=shape[2], next_position=seed)
