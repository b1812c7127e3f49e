"""A window of prefix entries gathered into one batch of keys and values, on the device that scores it.

Each entry is copied once, straight into one buffer holding the window's keys and values, right-padded to
the longest entry; only the padding is zeroed (it is masked, but must never be NaN). Where that buffer lives
is decided in one place, :func:`window_buffer`: page-locked host memory when the window goes to a CUDA device
(torch's caching host allocator keeps those blocks warm, and the one copy to the device runs asynchronously;
there is no stack on the host followed by a second, pinning copy), a reused warm host buffer when the window
is scored on the host (a fresh one costs a page fault per 4 KiB), device memory when the entries are there.

int8 entries (:class:`~.entry.Int8KV`) are dequantized once, fused, in the gather: into the window buffer
on the host when the window is scored there, or, for a device, their codes and scales are gathered (half the
bytes of bfloat16 cross the bus) and dequantized on the device into its buffer. Both give exactly the values
:attr:`PrefixEntry.keys` gives (the float32 product rounded once).
"""

from __future__ import annotations

import math

import torch

from .buffers import HostBuffers
from .entry import PrefixEntry, dequantize_into

__all__ = ["WINDOW_BUFFER_BYTES", "gather_window", "host_buffer_pinned", "window_buffer"]

#: Bytes of host window buffers kept warm for reuse: a window of 16 entries of 1024x1024 pages at the 2B shape
#: in bfloat16 (keys and values, 290 MB) fits.
WINDOW_BUFFER_BYTES = 512 * 2**20
_HOST_WINDOWS = HostBuffers(WINDOW_BUFFER_BYTES)


def host_buffer_pinned(target: torch.device) -> bool:
    """Whether a host buffer bound for ``target`` is page-locked: only when it goes to a CUDA device (the copy
    from pinned memory is then asynchronous and needs no staging copy). The one allocation policy here."""
    return target.type == "cuda" and torch.cuda.is_available()


def window_buffer(
    shape: tuple[int, ...], dtype: torch.dtype, source: torch.device, target: torch.device
) -> torch.Tensor:
    """An uninitialized [2, *shape] buffer (keys, values) for a window gathered on ``source`` and bound for
    ``target``: pinned host memory for a CUDA target, a warm reused host buffer for a host target (handed out
    again only once no tensor views it), else fresh memory on ``source``. The one allocation policy here."""
    full = (2, *shape)
    if source.type == "cpu" and host_buffer_pinned(target):
        return torch.empty(full, dtype=dtype, pin_memory=True)
    size = math.prod(full) * dtype.itemsize
    if source.type == "cpu" and target.type == "cpu" and size:
        return torch.frombuffer(_HOST_WINDOWS.take(size), dtype=torch.uint8).view(dtype).view(full)
    return torch.empty(full, dtype=dtype, device=source)


def gather_window(
    entries: list[PrefixEntry], device: torch.device | str, dtype: torch.dtype, *, codes_first: bool | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values of ``entries``, right-padded to the longest, on ``device`` in ``dtype``:
    [band_layers, batch, kv_heads, longest, head_dim] each.

    ``codes_first``: when every entry is int8, move the codes and scales and dequantize on ``device`` (True)
    or dequantize on the host (False); None picks True exactly when the entries live on the host and the
    window goes elsewhere (a GPU).
    """
    target = torch.device(device)
    source = entries[0].device
    quantized = all(e.int8 is not None for e in entries)
    if codes_first is None:
        codes_first = quantized and source != target
    if codes_first and quantized:
        return _gather_codes(entries, source, target, dtype)
    # Gathered where the entries live (the host, when read from disk), then one transfer per tensor.
    buffer = window_buffer(_window_shape(entries), dtype, source, target)  # [2, *window]: keys, values
    past_k, past_v = buffer[0], buffer[1]  # indexed, not unpacked: unbind's views refuse in-place writes under grad
    for b, entry in enumerate(entries):
        n = entry.length
        if entry.int8 is not None:
            stored = entry.int8.to(source)
            dequantize_into(stored.keys, stored.keys_scale, past_k[:, b, :, :n], stored.dtype)
            dequantize_into(stored.values, stored.values_scale, past_v[:, b, :, :n], stored.dtype)
        else:
            past_k[:, b, :, :n] = entry.keys
            past_v[:, b, :, :n] = entry.values
        past_k[:, b, :, n:] = 0
        past_v[:, b, :, n:] = 0
    if source != target:
        pinned = past_k.is_pinned()  # asynchronous from page-locked memory; the allocator keeps it until copied
        past_k = past_k.to(target, non_blocking=pinned)
        past_v = past_v.to(target, non_blocking=pinned)
    return past_k, past_v


def _window_shape(entries: list[PrefixEntry]) -> tuple[int, int, int, int, int]:
    layers, kv_heads, _, head_dim = entries[0].shape
    longest = max(e.length for e in entries)
    return layers, len(entries), kv_heads, longest, head_dim  # [band_layers, batch, kv_heads, longest, head_dim]


def _gather_codes(
    entries: list[PrefixEntry], source: torch.device, target: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 entries: codes and scales gathered into host buffers, moved once, dequantized on ``target``."""
    layers, batch, kv_heads, longest, head_dim = shape = _window_shape(entries)
    pinned = source.type == "cpu" and host_buffer_pinned(target)

    def buffer(size: tuple[int, ...], kind: torch.dtype) -> torch.Tensor:
        return torch.empty(size, dtype=kind, device=source, pin_memory=pinned)

    key_codes, value_codes = buffer(shape, torch.int8), buffer(shape, torch.int8)
    key_scales = buffer((layers, batch, kv_heads, 1, head_dim), torch.float32)  # per channel, over tokens
    value_scales = buffer((layers, batch, kv_heads, longest, 1), torch.float32)  # per token, over channels
    for b, entry in enumerate(entries):
        stored, n = entry.int8, entry.length
        assert stored is not None
        key_codes[:, b, :, :n] = stored.keys
        value_codes[:, b, :, :n] = stored.values
        key_scales[:, b] = stored.keys_scale
        value_scales[:, b, :, :n] = stored.values_scale
        key_codes[:, b, :, n:] = 0  # padding dequantizes to exact zeros
        value_codes[:, b, :, n:] = 0
        value_scales[:, b, :, n:] = 0
    moved = [t.to(target, non_blocking=pinned) for t in (key_codes, value_codes, key_scales, value_scales)]
    past_k = torch.empty(shape, dtype=dtype, device=target)
    past_v = torch.empty(shape, dtype=dtype, device=target)
    # Flattened to 4-D ([band_layers * batch, kv_heads, ...]) for dequantize_into's per-head chunks.
    rows, original = layers * batch, entries[0].dtype
    k_codes, v_codes, k_scales, v_scales = moved
    dequantize_into(
        k_codes.view(rows, kv_heads, longest, head_dim),
        k_scales.view(rows, kv_heads, 1, head_dim),
        past_k.view(rows, kv_heads, longest, head_dim),
        original,
    )
    dequantize_into(
        v_codes.view(rows, kv_heads, longest, head_dim),
        v_scales.view(rows, kv_heads, longest, 1),
        past_v.view(rows, kv_heads, longest, head_dim),
        original,
    )
    return past_k, past_v
