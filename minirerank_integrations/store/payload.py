"""The safetensors payload of a prefix blob, read as views of the read buffer (:mod:`.codec` writes it with
``safetensors.torch.save``).

Its JSON header is parsed here strictly (names, dtypes, shapes, byte spans tiling the data exactly) and the
tensors are checked against what the codec header implies (names, dtypes, shapes for the storage); an int8
payload's scales must be finite and >= 0. Nothing unpickles and nothing is copied: the tensors are views of
the payload (one ``torch.frombuffer`` per run of same-dtype tensors, sliced).

Every blob of one entry shape and storage carries the very same safetensors header bytes, and whether they
describe a valid layout depends on nothing else (the header bytes, the payload size, the storage and the
shape). So the checked layout is kept, keyed by exactly those, and a warm read neither parses JSON nor
repeats the checks: at the 2B shape this was about 0.1 ms of a 0.35 ms decode of a 2.9 MB int8 entry
(``bench/host.py``). The scales are values, not layout, and are checked on every read.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import CacheError
from .memo import Memo

__all__ = ["MAX_HEADER_BYTES", "view_payload"]

MAX_HEADER_BYTES = 2**16  # a real header is ~300 bytes; a larger length is damage, not a header
_LENGTH = struct.Struct("<Q")  # little-endian u64: bytes of the safetensors JSON header
# The safetensors dtype names the codec writes, and so the only ones read.
_SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F32": torch.float32,
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "I8": torch.int8,
}
_STORED: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_SCALES = ("keys_scale", "values_scale")
_KEPT_LAYOUTS = 64  # distinct (shape, storage) layouts kept; a store sees one per page size and precision
_KEPT_HEADER_BYTES = 4096  # longer safetensors headers are checked every time, not kept


@dataclass(frozen=True)
class _Tensor:
    name: str
    dtype: torch.dtype
    shape: torch.Size
    offset: int  # bytes from the start of the payload
    numel: int


@dataclass(frozen=True)
class _Run:
    """Tensors of one dtype, adjacent in the payload: viewed with one ``torch.frombuffer``."""

    dtype: torch.dtype
    offset: int  # bytes from the start of the payload
    numel: int
    tensors: tuple[tuple[str, torch.Size, int, int], ...]  # name, shape, first and last element + 1 in the run


@dataclass(frozen=True)
class _Layout:
    runs: tuple[_Run, ...]
    scales: int | None  # the run that holds both int8 scale tensors and nothing else, when there is one


_layouts: Memo[tuple[bytes, int, str, tuple[int, ...]], _Layout] = Memo(_KEPT_LAYOUTS)


def view_payload(payload: memoryview, storage: str, shape: tuple[int, int, int, int]) -> dict[str, torch.Tensor]:
    """The tensors of ``payload`` as views of it (no copy), after checking them against an entry of ``shape``
    ``[band_layers, kv_heads, length, head_dim]`` stored as ``storage``; any mismatch raises :class:`CacheError`.

    ``payload`` is a byte memoryview whose checksum the caller has checked; the views keep it alive.
    """
    total = payload.nbytes
    if total < _LENGTH.size:
        raise _refuse(f"{total} bytes, shorter than its {_LENGTH.size}-byte header length")
    (header_length,) = _LENGTH.unpack_from(payload)
    data_start = _LENGTH.size + header_length
    if header_length > MAX_HEADER_BYTES or data_start > total:
        raise _refuse(f"header length {header_length} does not fit the {total}-byte payload")
    raw = bytes(payload[_LENGTH.size : data_start])
    key = (raw, total, storage, shape)
    layout = _layouts.get(key)
    if layout is None:
        layout = _checked_layout(raw, data_start, total, storage, shape)
        if header_length <= _KEPT_HEADER_BYTES:
            _layouts.put(key, layout)  # real stores use a handful
    # One frombuffer per run of same-dtype tensors (2 for int8, 1 otherwise), sliced into views: each
    # frombuffer costs several microseconds on a read with cold CPU caches, a slice and a view far less.
    tensors: dict[str, torch.Tensor] = {}
    runs: list[torch.Tensor] = []
    for run in layout.runs:
        if run.numel:
            flat = torch.frombuffer(payload, dtype=run.dtype, count=run.numel, offset=run.offset)
        else:
            flat = torch.empty(0, dtype=run.dtype)
        runs.append(flat)
        for name, tensor_shape, begin, end in run.tensors:
            tensors[name] = flat[begin:end].view(tensor_shape)
    if storage == "int8":
        whole = [runs[layout.scales]] if layout.scales is not None else [tensors[name] for name in _SCALES]
        _check_scales([scales for scales in whole if scales.numel()])
    return tensors


def _check_scales(groups: list[torch.Tensor]) -> None:
    """Scales finite and >= 0: one min/max pass per group (both scale tensors at once, as safetensors lays them out)."""
    for scales in groups:
        low, high = torch.aminmax(scales)
        # min and max propagate NaN, which fails both comparisons; inf fails the second
        if not (float(low) >= 0 and math.isfinite(float(high))):
            raise CacheError("prefix int8 scales hold negative or non-finite values")


def _checked_layout(raw: bytes, data_start: int, total: int, storage: str, shape: tuple[int, ...]) -> _Layout:
    """The layout the safetensors header ``raw`` describes, checked to tile the data and to hold exactly the
    tensors an entry of ``shape`` stored as ``storage`` has."""
    meta = json_object(raw, "prefix payload's safetensors header")
    data_bytes = total - data_start
    found: list[_Tensor] = []
    for name, info in meta.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise _refuse(f"entry {name!r:.40} is not a tensor description")
        dtype = _SAFETENSORS_DTYPES.get(info["dtype"]) if isinstance(info["dtype"], str) else None
        dims, offsets = info["shape"], info["data_offsets"]
        if dtype is None:
            raise _refuse(
                f"tensor {name!r:.40} has dtype {info['dtype']!r:.20}, not one of {sorted(_SAFETENSORS_DTYPES)}"
            )
        if not isinstance(dims, list) or len(dims) > 8 or not all(_is_int(n) and n >= 0 for n in dims):
            raise _refuse(f"tensor {name!r:.40} has shape {dims!r:.80}")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(n) for n in offsets):
            raise _refuse(f"tensor {name!r:.40} has data_offsets {offsets!r:.80}")
        begin, end = offsets
        numel = math.prod(dims)
        if not 0 <= begin <= end <= data_bytes or end - begin != numel * dtype.itemsize:
            raise _refuse(f"tensor {name!r:.40} spans bytes [{begin}, {end}) of {data_bytes}, for {numel} elements")
        found.append(_Tensor(name, dtype, torch.Size(dims), data_start + begin, numel))
    position = data_start
    for tensor in sorted(found, key=lambda t: t.offset):
        if tensor.offset != position:
            raise _refuse(f"tensor bytes overlap or leave a gap at byte {position - data_start}")
        position += tensor.numel * tensor.dtype.itemsize
    if position != total:
        raise _refuse(f"tensors cover {position - data_start} of {data_bytes} data bytes")
    _match(found, storage, shape)
    groups: list[list[_Tensor]] = []
    for tensor in sorted(found, key=lambda t: t.offset):  # tiled: each starts where the one before ends
        if groups and groups[-1][-1].dtype == tensor.dtype:
            groups[-1].append(tensor)
        else:
            groups.append([tensor])
    runs: list[_Run] = []
    scales: int | None = None
    for group in groups:
        members: list[tuple[str, torch.Size, int, int]] = []
        start = 0
        for tensor in group:
            members.append((tensor.name, tensor.shape, start, start + tensor.numel))
            start += tensor.numel
        if sorted(name for name, *_ in members) == sorted(_SCALES):
            scales = len(runs)
        runs.append(_Run(group[0].dtype, group[0].offset, start, tuple(members)))
    return _Layout(tuple(runs), scales)


def _match(found: list[_Tensor], storage: str, shape: tuple[int, ...]) -> None:
    """The payload's tensors against the codec header: names, dtypes and shapes."""
    band_layers, kv_heads, length, head_dim = shape
    full = torch.Size(shape)
    expected: dict[str, tuple[torch.dtype, torch.Size]]
    if storage == "int8":
        expected = {
            "keys": (torch.int8, full),
            "values": (torch.int8, full),
            "keys_scale": (torch.float32, torch.Size([band_layers, kv_heads, 1, head_dim])),
            "values_scale": (torch.float32, torch.Size([band_layers, kv_heads, length, 1])),
        }
    else:
        expected = {"keys": (_STORED[storage], full), "values": (_STORED[storage], full)}
    names = sorted(tensor.name for tensor in found)
    if names != sorted(expected):
        raise CacheError(f"prefix payload holds tensors {names}, expected {sorted(expected)}")
    for tensor in found:
        dtype, tensor_shape = expected[tensor.name]
        if tensor.dtype != dtype or tensor.shape != tensor_shape:
            raise CacheError(
                f"prefix tensor {tensor.name!r} is {tensor.dtype} {tuple(tensor.shape)}, "
                f"header implies {dtype} {tuple(tensor_shape)}"
            )


def json_object(raw: bytes, what: str) -> dict[str, Any]:
    """``raw`` read as one JSON object, else a :class:`CacheError` naming ``what`` was not one."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise CacheError(f"{what} is not JSON: {error}") from error
    if not isinstance(value, dict):
        raise CacheError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _refuse(why: str) -> CacheError:
    return CacheError(f"prefix payload is not readable safetensors: {why}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
