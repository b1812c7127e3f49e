"""The window gather: one buffer per tensor, equal to stacking the entries, int8 dequantized once and exactly."""

from __future__ import annotations

import pytest
import torch

from minirerank_integrations.store import PrefixEntry
from minirerank_integrations.store.codec import decode_entry, encode_entry
from minirerank_integrations.store.entry import dequantize_into
from minirerank_integrations.store.window import gather_window, host_buffer_pinned, window_buffer

SHAPE = (2, 3, 16)  # band_layers, kv_heads, head_dim


def entry(length: int, seed: int, dtype: torch.dtype = torch.bfloat16) -> PrefixEntry:
    generator = torch.Generator().manual_seed(seed)
    layers, heads, dim = SHAPE
    keys = torch.randn(layers, heads, length, dim, generator=generator) * torch.linspace(0.1, 6.0, dim)
    values = torch.randn(layers, heads, length, dim, generator=generator) * 2
    return PrefixEntry(keys=keys.to(dtype), values=values.to(dtype), length=length, next_position=length + 1)


def int8(original: PrefixEntry) -> PrefixEntry:
    """``original`` through the codec's int8 storage: what an int8 store serves (codes and scales)."""
    decoded = decode_entry(encode_entry(original, key="k", storage="int8"), key="k")
    assert decoded.int8 is not None and decoded.int8.keys.dtype == torch.int8
    return decoded


def stacked(entries: list[PrefixEntry], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: each entry's dense keys and values zero-padded and stacked on the batch axis."""
    longest = max(e.length for e in entries)

    def padded(tensor: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(tensor.to(dtype), (0, 0, 0, longest - tensor.shape[2]))

    return (
        torch.stack([padded(e.keys) for e in entries], 1),  # [band_layers, batch, kv_heads, longest, head_dim]
        torch.stack([padded(e.values) for e in entries], 1),
    )


def old_dequantized(stored: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """How the codec dequantized before int8 entries were served as stored: codes cast, then scaled in place."""
    out = torch.empty(stored.shape, dtype=dtype)
    out.copy_(stored)
    return out.mul_(scales)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_the_gathered_window_equals_the_stacked_entries(dtype: torch.dtype) -> None:
    entries = [entry(5, 0), entry(9, 1), entry(1, 2), entry(9, 3)]
    keys, values = gather_window(entries, "cpu", dtype)
    want_keys, want_values = stacked(entries, dtype)
    assert keys.shape == (2, 4, 3, 9, 16) and keys.dtype == dtype
    assert torch.equal(keys, want_keys) and torch.equal(values, want_values)


@pytest.mark.parametrize("codes_first", [False, True, None])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_int8_entries_are_dequantized_exactly_in_the_gather(codes_first: bool | None, dtype: torch.dtype) -> None:
    originals = [entry(7, 10), entry(3, 11), entry(12, 12)]
    entries = [int8(e) for e in originals]
    keys, values = gather_window(entries, "cpu", dtype, codes_first=codes_first)
    assert all(e.int8 is not None and e._keys is None for e in entries)  # the gather read the codes, not .keys
    want_keys, want_values = stacked(entries, dtype)  # .keys: dequantized per entry
    assert torch.equal(keys, want_keys) and torch.equal(values, want_values)
    # ...and both equal what the codec served before (cast, then scaled in place), value for value
    for b, e in enumerate(entries):
        assert e.int8 is not None
        n = e.length
        assert torch.equal(keys[:, b, :, :n], old_dequantized(e.int8.keys, e.int8.keys_scale, e.dtype).to(dtype))
        assert torch.equal(values[:, b, :, :n], old_dequantized(e.int8.values, e.int8.values_scale, e.dtype).to(dtype))
        assert not keys[:, b, :, n:].any() and not values[:, b, :, n:].any()  # padding: exact zeros


def test_a_window_mixing_int8_and_computed_entries() -> None:
    entries = [int8(entry(4, 20)), entry(6, 21), int8(entry(2, 22))]
    keys, values = gather_window(entries, "cpu", torch.bfloat16)
    want_keys, want_values = stacked(entries, torch.bfloat16)
    assert torch.equal(keys, want_keys) and torch.equal(values, want_values)


def test_dequantize_into_chunks_like_one_multiply() -> None:
    """Heads longer than a chunk and chunks spanning heads give the one float32 product, rounded once."""
    generator = torch.Generator().manual_seed(5)
    codes = torch.randint(-127, 128, (3, 5, 700, 128), generator=generator, dtype=torch.int8)
    scales = torch.rand(3, 5, 700, 1, generator=generator)
    out = torch.empty(codes.shape, dtype=torch.bfloat16)
    assert torch.equal(dequantize_into(codes, scales, out), (codes.float() * scales).to(torch.bfloat16))


def test_host_buffers_are_pinned_only_for_cuda() -> None:
    assert not host_buffer_pinned(torch.device("cpu"))
    assert not host_buffer_pinned(torch.device("meta"))
    # On a machine without CUDA nothing is pinned; with one, a buffer bound for it is.
    assert host_buffer_pinned(torch.device("cuda")) == torch.cuda.is_available()


def test_an_int8_entry_moves_as_codes_and_keeps_its_bytes() -> None:
    original = entry(128, 30)
    served = int8(original)
    assert served.nbytes() < original.nbytes() * 0.6  # codes and scales, about half of bfloat16
    assert served.to(torch.device("cpu")) is served
    assert served.shape == original.shape and served.dtype == torch.bfloat16 and served.is_finite()
    # Written again as int8 (a tier writing back what it read): byte for byte the first blob.
    assert encode_entry(served, key="k", storage="int8") == encode_entry(original, key="k", storage="int8")


def test_host_windows_reuse_a_warm_buffer_only_once_nothing_views_it() -> None:
    cpu = torch.device("cpu")
    shape = (2, 3, 4, 5, 8)
    first = window_buffer(shape, torch.bfloat16, cpu, cpu)
    assert first.shape == (2, *shape) and not first.is_pinned()
    second = window_buffer(shape, torch.bfloat16, cpu, cpu)
    assert second.data_ptr() != first.data_ptr()  # the first is still viewed: not handed out again
    address = first.data_ptr()
    del first, second
    assert window_buffer(shape, torch.bfloat16, cpu, cpu).data_ptr() == address  # warm, reused


def test_a_kept_window_is_never_overwritten_by_the_next() -> None:
    one, two = [entry(6, 40), entry(4, 41)], [int8(entry(6, 42)), entry(5, 43)]
    keys, values = gather_window(one, "cpu", torch.bfloat16)
    del values  # half of the buffer dropped: the other half still holds it
    gather_window(two, "cpu", torch.bfloat16)
    again = gather_window(two, "cpu", torch.bfloat16)
    assert torch.equal(keys, stacked(one, torch.bfloat16)[0])
    assert torch.equal(again[0], stacked(two, torch.bfloat16)[0])


def test_a_window_of_entries_that_need_gradients_is_gathered_and_differentiable() -> None:
    """Training gathers computed entries under grad mode: the window carries their gradients back."""
    leaves = [entry(3, 50, torch.float32), entry(5, 51, torch.float32)]
    for e in leaves:
        e.keys.requires_grad_(True)
    keys, values = gather_window(leaves, "cpu", torch.float32)
    keys.sum().backward()
    assert all(e.keys.grad is not None and torch.equal(e.keys.grad, torch.ones_like(e.keys)) for e in leaves)
