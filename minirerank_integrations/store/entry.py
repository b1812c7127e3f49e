"""The prefix entry and the store interface every backend implements.

A prefix entry holds exactly what the fast path reads for one prefix: the post-RoPE keys and values
of the band layers for the kept tokens, and the M-RoPE index at which the suffix starts.

An entry read from an int8 store stays int8 (:class:`Int8KV`: codes and scales, views of the read buffer)
until its values are needed: the window gather (:mod:`.window`) dequantizes it once, fused, into the batch
buffer on the device the window goes to, so the host neither dequantizes nor moves twice the bytes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["Int8KV", "PrefixEntry", "PrefixStore", "StoreStats", "all_finite", "dequantize_into"]

#: Elements per float32 chunk of the host dequantization (1 MiB: the chunk stays in the core's cache).
_DEQUANTIZE_CHUNK = 2**18


@dataclass(frozen=True)
class Int8KV:
    """Keys and values held as symmetric int8 codes with float32 scales (the codec's ``int8`` storage).

    ``x = code * scale``, computed in float32 and rounded once into ``dtype`` (:func:`dequantize_into`).
    """

    keys: torch.Tensor  # int8 [band_layers, kv_heads, length, head_dim]
    values: torch.Tensor  # int8 [band_layers, kv_heads, length, head_dim]
    keys_scale: torch.Tensor  # float32 [band_layers, kv_heads, 1, head_dim]: per channel, over tokens
    values_scale: torch.Tensor  # float32 [band_layers, kv_heads, length, 1]: per token, over channels
    dtype: torch.dtype  # the entry's own dtype, which dequantization restores

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.keys, self.values, self.keys_scale, self.values_scale))

    def to(self, device: torch.device) -> Int8KV:
        """The same codes and scales on ``device`` (non-blocking from pinned host memory)."""

        def moved(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.to(device, non_blocking=tensor.is_pinned())

        return Int8KV(
            moved(self.keys), moved(self.values), moved(self.keys_scale), moved(self.values_scale), self.dtype
        )


def dequantize_into(
    codes: torch.Tensor, scales: torch.Tensor, out: torch.Tensor, rounded: torch.dtype | None = None
) -> torch.Tensor:
    """``out[...] = codes * scales`` (broadcast), the product in float32 rounded once into ``out``'s dtype
    (or first into ``rounded``, the entry's own dtype, when ``out`` is wider: the values its ``keys`` have).

    ``out`` may be a strided view (a slot of a window buffer). On an accelerator this is one fused kernel. On
    the CPU torch's mixed-dtype multiply takes a slow unvectorized loop (about 25x a memcpy of the codes,
    measured at the 2B shape), so the same float32 arithmetic runs in cache-sized chunks of contiguous
    float32 work: identical values, several times faster (``bench/host.py``'s gather rows).
    """
    if rounded is not None and rounded in (out.dtype, torch.float32):
        rounded = None  # the float32 product needs no second rounding
    if codes.device.type != "cpu":
        if rounded is None:
            return torch.mul(codes, scales, out=out)
        return out.copy_(torch.mul(codes, scales).to(rounded))
    if not codes.numel():
        return out
    layers, heads = codes.shape[0], codes.shape[1]
    per_head = max(1, codes[0, 0].numel())  # elements of one [length, head_dim] slice
    step = max(1, min(heads, _DEQUANTIZE_CHUNK // per_head))  # heads per chunk
    scratch = torch.empty((step, *codes.shape[2:]), dtype=torch.float32)  # [heads per chunk, length, head_dim]
    for layer in range(layers):
        for head in range(0, heads, step):
            end = min(head + step, heads)
            work = scratch[: end - head]
            work.copy_(codes[layer, head:end])  # int8 -> float32, exact
            work.mul_(scales[layer, head:end])  # the float32 product, as on a device
            if rounded is not None:
                work.copy_(work.to(rounded))
            out[layer, head:end].copy_(work)  # rounded once into out's dtype
    return out


class PrefixEntry:
    """The cached state of one prefix (``docs/design.md``, "The miniReranker computation").

    ``keys`` and ``values`` are [band_layers, kv_heads, length, head_dim] (RoPE already applied to keys);
    ``length`` the tokens kept in the prefix (after pruning); ``next_position`` the M-RoPE index where the
    suffix's first token sits. An entry built with :meth:`from_int8` holds int8 codes and scales instead
    (``int8``); its ``keys`` and ``values`` are dequantized on first access and kept, while the window
    gather reads the codes directly. Entries are never changed after they are built.
    """

    __slots__ = ("_keys", "_values", "int8", "length", "next_position")

    def __init__(self, *, keys: torch.Tensor, values: torch.Tensor, length: int, next_position: int) -> None:
        self._keys: torch.Tensor | None = keys
        self._values: torch.Tensor | None = values
        self.int8: Int8KV | None = None  # the stored form, when the entry came from an int8 store
        self.length = length
        self.next_position = next_position

    @classmethod
    def from_int8(cls, stored: Int8KV, *, length: int, next_position: int) -> PrefixEntry:
        """An entry held as int8 codes and scales (no dequantization until its values are read)."""
        entry = cls.__new__(cls)
        entry._keys = entry._values = None
        entry.int8 = stored
        entry.length = length
        entry.next_position = next_position
        return entry

    @property
    def keys(self) -> torch.Tensor:
        """[band_layers, kv_heads, length, head_dim] in ``dtype`` (dequantized once for an int8 entry)."""
        if self._keys is None:
            stored = self._stored()
            out = torch.empty(stored.keys.shape, dtype=stored.dtype, device=stored.keys.device)
            self._keys = dequantize_into(stored.keys, stored.keys_scale, out)
        return self._keys

    @property
    def values(self) -> torch.Tensor:
        """[band_layers, kv_heads, length, head_dim] in ``dtype`` (dequantized once for an int8 entry)."""
        if self._values is None:
            stored = self._stored()
            out = torch.empty(stored.values.shape, dtype=stored.dtype, device=stored.values.device)
            self._values = dequantize_into(stored.values, stored.values_scale, out)
        return self._values

    @property
    def shape(self) -> torch.Size:
        """[band_layers, kv_heads, length, head_dim], without dequantizing."""
        return self.int8.keys.shape if self.int8 is not None else self.keys.shape

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of ``keys`` and ``values`` (an int8 entry's original dtype), without dequantizing."""
        return self.int8.dtype if self.int8 is not None else self.keys.dtype

    @property
    def device(self) -> torch.device:
        """Where the entry's tensors live."""
        return self.int8.keys.device if self.int8 is not None else self.keys.device

    def to(self, device: torch.device) -> PrefixEntry:
        """This entry on ``device`` (itself when already there); an int8 entry moves as codes and scales."""
        if self.device == device and (self.int8 is not None or self.values.device == device):
            return self
        if self.int8 is not None:
            return PrefixEntry.from_int8(self.int8.to(device), length=self.length, next_position=self.next_position)
        return PrefixEntry(
            keys=self.keys.to(device),
            values=self.values.to(device),
            length=self.length,
            next_position=self.next_position,
        )

    def nbytes(self) -> int:
        """Bytes the entry holds as built (an int8 entry: codes and scales)."""
        if self.int8 is not None:
            return self.int8.nbytes()
        return self.keys.numel() * self.keys.element_size() + self.values.numel() * self.values.element_size()

    def is_finite(self) -> bool:
        """Whether keys and values hold no NaN or inf: a store never keeps an entry that is not."""
        if self.int8 is not None:  # codes are integers: finite exactly when the scales are
            return all_finite(self.int8.keys_scale, self.int8.values_scale)
        return all_finite(self.keys, self.values)

    def _stored(self) -> Int8KV:
        assert self.int8 is not None  # keys/values are None only for an int8 entry
        return self.int8

    def __repr__(self) -> str:
        held = "int8" if self.int8 is not None else str(self.dtype).removeprefix("torch.")
        return (
            f"PrefixEntry(shape={list(self.shape)}, {held}, length={self.length}, "
            f"next_position={self.next_position}, device={self.device})"
        )


def all_finite(*tensors: torch.Tensor) -> bool:
    """Whether every element of ``tensors`` is finite, at the cost of one pass over each.

    A float32 sum is finite only if every addend is (a NaN or an inf makes it NaN or inf), so it answers
    without a mask the size of the tensor; only when a sum overflows is each element checked.
    """
    for tensor in tensors:
        if not tensor.numel() or not tensor.is_floating_point() or tensor.is_meta:
            continue  # nothing to check (a meta tensor holds no values)
        if not bool(torch.isfinite(tensor.sum(dtype=torch.float32))) and not bool(torch.isfinite(tensor).all()):
            return False
    return True


@dataclass
class StoreStats:
    """Counters of a prefix store since it was opened."""

    hits: int = 0
    misses: int = 0
    writes: int = 0
    evictions: int = 0
    rejected: int = 0  # entries found unreadable (bad header, checksum, shape) and dropped
    bytes: int = 0  # bytes currently held
    write_failures: int = 0  # puts that could not be persisted (read-only or full disk, SQLite errors, Redis down)
    unstorable: int = 0  # entries the storage precision cannot hold faithfully (float16 overflow): not stored
    bytes_written: int = 0  # encoded bytes of the entries this store accepted since it was opened


class PrefixStore(ABC):
    """Maps a prefix key (a hex digest made by the engine) to a :class:`PrefixEntry`."""

    stats: StoreStats

    @abstractmethod
    def get(self, key: str) -> PrefixEntry | None:
        """The entry for ``key``, or None on a miss (an unreadable entry counts as a miss)."""

    @abstractmethod
    def put(self, key: str, entry: PrefixEntry) -> None:
        """Store ``entry`` under ``key``; failures to persist are reported as warnings, not raised."""

    def get_many(self, keys: Sequence[str]) -> list[PrefixEntry | None]:
        """The entries for ``keys``, in order (None for each miss).

        One lookup per key here; a networked backend overrides it to fetch every key in one round trip,
        which is how the engine asks for all the prefixes of a rerank call.
        """
        return [self.get(key) for key in keys]

    @abstractmethod
    def __contains__(self, key: object) -> bool: ...

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every accepted ``put`` is written (a write-behind store queues them); True when done.

        Stores that write on the caller's thread are always done.
        """
        return True

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release files or connections; the in-memory store has none."""
