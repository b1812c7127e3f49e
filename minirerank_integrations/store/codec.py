"""Prefix entries to bytes and back: a fixed prefix, a JSON header with a checksum, a safetensors payload.

This is the ``Disk`` half of the prefix store (the store itself only moves bytes). Layout of one blob::

    b"MRPX"                      4 bytes   magic
    version                      2 bytes   big-endian unsigned, == CODEC_VERSION
    header_length                4 bytes   big-endian unsigned, bytes of the JSON header that follows
    header                       header_length bytes of UTF-8 JSON (canonical: sorted keys, no spaces)
    payload                      safetensors bytes, exactly header["payload_bytes"] long

The header is padded with spaces so that the payload starts at a multiple of 64 bytes of the blob: the
tensors a reader builds on its read buffer are then aligned for every dtype.

Header fields: ``format`` (== CODEC_VERSION), ``key`` (the store key the entry was written under: a blob
read under another key, e.g. swapped or copied rows, is refused), ``storage`` (how tensors are stored; a
reader may demand one, so an int8 or float16 entry is never served where float32 is asked for), ``dtype`` (the dtype
the entry had when encoded, restored on decode), ``shape`` ([band_layers, kv_heads, length, head_dim],
keys and values alike), ``length``, ``next_position``, ``payload_bytes`` and ``checksum``: the xxh3-128
digest (``xxhash``) of the canonical header without ``checksum`` followed by the payload, so that a changed
header field is caught as surely as a changed payload byte. xxh3 detects damage (a flipped bit, a truncated
or swapped file) at memory speed; like the blake2b it replaced, it is not a signature: whoever can write
the store can forge entries. Tensors are written with ``safetensors`` and read back by :mod:`.payload`,
which parses its header strictly (names, dtypes, shapes, offsets that tile the data exactly; a checked layout
is kept for the next blob of the same shape) and views the read buffer with ``torch.frombuffer``: the payload
is not copied, and nothing unpickles or calls ``torch.load``.

Versions: 2 bound the key in the header; 3 (xxh3-128 instead of blake2b-256, payload aligned, non-finite
entries refused) reads no older blob: an entry of version 2 is a miss, dropped and recomputed by the store.

Storage modes and their error bounds (``x`` an original element, ``y`` the decoded one), checked by
``tests/store/test_prefix_codec.py``:

No mode stores NaN or inf: an entry holding one raises :class:`UnstorableEntry` (a backend then serves it
without storing it), because a non-finite prefix would give non-finite scores to every later query.

* ``"float32"``: lossless for float32, bfloat16 and float16 entries (bit-exact).
* ``"bfloat16"``: lossless for bfloat16 entries; otherwise round-to-nearest-even to 8 significant bits,
  ``|x - y| <= |x| * 2**-8``.
* ``"float16"``: lossless for float16 entries; otherwise ``|x - y| <= max(|x| * 2**-11, 2**-25)`` (the
  second term is half the spacing of float16 subnormals). Needs finite ``|x| <= 65504``, else encoding
  raises :class:`CacheError`. ``"bfloat16"`` likewise refuses finite values that round to infinity.
* ``"int8"``: symmetric, round-to-nearest, codes in [-127, 127], float32 scales. Keys get one scale per
  (layer, kv head, head_dim channel), taken over the token axis; values get one scale per
  (layer, kv head, token), taken over head_dim: keys carry outlier channels and values do not (KIVI,
  Liu et al. 2024, arXiv:2402.02750, section 3). ``scale = max|x| / 127`` over its group and, computed
  in float32, ``|x - y| <= scale / 2``; when the entry is bfloat16 or float16 the final cast back to it
  adds at most half a unit in its last place (``|y| * 2**-8`` for bfloat16, ``|y| * 2**-11`` for float16).
  A blob is about a quarter of float32
  (half of bfloat16) plus the scales.
"""

from __future__ import annotations

import json
import struct
import warnings
from typing import Any, get_args

import torch
import xxhash
from safetensors.torch import save as _safetensors_save

from ..errors import CacheError, ConfigError
from .entry import Int8KV, PrefixEntry, all_finite
from .memo import Memo
from .payload import json_object, view_payload
from .precision import Storage  # named once, without torch

__all__ = ["CODEC_VERSION", "Storage", "UnstorableEntry", "decode_entry", "encode_entry", "row_key"]

# 2: the header binds the key. 3: xxh3-128 checksum, payload aligned, non-finite entries refused.
# Bump on any change to the layout or the header; older blobs then decode as CacheError (a miss, recomputed).
CODEC_VERSION = 3

# Decoded tensors view the caller's buffer. For bytes (a Redis reply, a SQLite row) torch.frombuffer warns, once
# per process, that the view could write to an immutable object; entries are never written in place, so the
# view is intended, and the one warning is spent here at import instead of inside some later caller's call.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    torch.frombuffer(b"\0", dtype=torch.uint8)


class UnstorableEntry(CacheError):
    """A well-formed entry whose values must not or cannot be stored: NaN or inf in any storage, float16 or
    bfloat16 overflow. A backend does not store it, and the rerank that computed it goes on."""


MAGIC = b"MRPX"
_PREFIX = struct.Struct(">4sHI")  # magic, version, header_length: 10 bytes
MAX_HEADER_BYTES = 2**16  # a real header is ~300 bytes; a larger length is damage, not a header
_PAYLOAD_ALIGN = 64  # bytes; the payload starts at a multiple of this within the blob (header padded with spaces)
_CHECKSUM_PREFIX = "xxh3-128:"
_KEPT_HEADERS = 2048  # checked headers kept (about 1.5 KB each), see _checked_header
_headers: Memo[bytes, tuple[dict[str, Any], bytes]] = Memo(_KEPT_HEADERS)

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
_STORAGES: tuple[str, ...] = get_args(Storage)
_FLOAT16_MAX = 65504.0  # largest finite float16
_INT8_LEVELS = 127  # symmetric codes in [-127, 127]; -128 is never produced
_MAX_KEY_CHARS = 1024  # store keys are hex digests (64 chars, plus the storage in a row key); a longer one is damage
_HEADER_FIELDS = {
    "format",
    "key",
    "storage",
    "dtype",
    "shape",
    "length",
    "next_position",
    "payload_bytes",
    "checksum",
}


def row_key(key: str, storage: Storage) -> str:
    """The name under which a backend keeps the blob of ``key`` stored as ``storage``.

    The precision is part of the row, so engines of different precisions sharing one directory or one Redis
    namespace keep their entries side by side instead of refusing (and deleting) each other's, and "is it
    stored?" is answered for the precision that asks.
    """
    return f"{key}.{storage}"  # a dot: engine keys are hex digests, and Redis names keep ":" for namespaces


def encode_entry(entry: PrefixEntry, *, key: str, storage: Storage = "float32") -> bytes:
    """The bytes of ``entry`` stored under ``key``, as ``storage`` (see the module docstring for each mode's
    error bound). ``key`` goes into the checksummed header: :func:`decode_entry` refuses the blob under
    any other key.

    Raises :class:`ConfigError` for an unknown ``storage`` or a key that is not a non-empty str,
    :class:`UnstorableEntry` for NaN or inf (in any storage) or values a lossy mode cannot represent, and
    :class:`CacheError` for an entry that cannot be stored (not 4-D, keys and values differing, ``length``
    not the token axis, a dtype other than float32/bfloat16/float16).
    """
    if storage not in _STORAGES:
        raise ConfigError(f"prefix storage {storage!r} is unknown; use one of {', '.join(_STORAGES)}")
    if not isinstance(key, str) or not key or len(key) > _MAX_KEY_CHARS:
        raise ConfigError(f"prefix key must be a non-empty str of at most {_MAX_KEY_CHARS} chars, got {key!r:.80}")
    if entry.int8 is not None and storage == "int8":
        # Already int8 (read from an int8 tier, written to another): its codes and scales are stored as they
        # are, byte for byte what quantizing the original gave, without dequantizing and quantizing again.
        stored, shape = _checked_int8(entry), list(entry.shape)
        dtype_name = _dtype_name(stored.dtype)
        tensors = {
            "keys": stored.keys,
            "values": stored.values,
            "keys_scale": stored.keys_scale,
            "values_scale": stored.values_scale,
        }
        return _pack(_header(key, storage, dtype_name, shape, entry), _safetensors_save(tensors))
    keys, values = _checked_tensors(entry)
    if not all_finite(keys, values):
        raise UnstorableEntry("prefix keys or values hold NaN or inf; a non-finite entry is never stored")
    dtype_name = _dtype_name(keys.dtype)
    if storage == "int8":
        key_codes, key_scales = _quantize_int8(keys, dim=2)  # scales [band_layers, kv_heads, 1, head_dim]
        value_codes, value_scales = _quantize_int8(values, dim=3)  # scales [band_layers, kv_heads, length, 1]
        tensors = {
            "keys": key_codes,
            "values": value_codes,
            "keys_scale": key_scales,
            "values_scale": value_scales,
        }
    else:
        precision = _DTYPES[storage]
        if storage == "float16" and keys.dtype != torch.float16:
            _require_float16_range(keys, "keys")
            _require_float16_range(values, "values")
        tensors = {"keys": keys.to(precision), "values": values.to(precision)}
        if storage == "bfloat16" and keys.dtype == torch.float32:
            _require_no_overflow(tensors["keys"], "keys", storage)
            _require_no_overflow(tensors["values"], "values", storage)
    return _pack(_header(key, storage, dtype_name, list(keys.shape), entry), _safetensors_save(tensors))


def _header(key: str, storage: str, dtype_name: str, shape: list[int], entry: PrefixEntry) -> dict[str, Any]:
    """The header fields but ``payload_bytes`` and ``checksum`` (:func:`_pack` adds them)."""
    return {
        "format": CODEC_VERSION,
        "key": key,
        "storage": storage,
        "dtype": dtype_name,
        "shape": shape,
        "length": entry.length,
        "next_position": entry.next_position,
    }


def decode_entry(
    data: bytes | bytearray | memoryview,
    *,
    key: str,
    storage: Storage | None = None,
    device: torch.device | None = None,
) -> PrefixEntry:
    """The entry that :func:`encode_entry` turned into ``data`` under ``key``; any damage raises
    :class:`CacheError`, and so does a blob written under another key or, when ``storage`` is given, stored
    in another precision (a float32 reader is never served an int8 or float16 entry).

    Checked before anything is served: magic, version, header size and JSON, every header field's type
    and range, payload size, checksum, the key and storage, then the safetensors header (names, dtypes,
    shapes, offsets tiling the data) and the tensors against the header.

    Tensors come back on the CPU, contiguous, in the dtype the entry had when it was encoded. Where that is
    the stored precision (a bfloat16 entry stored as bfloat16, say) they are views of ``data``, not copies:
    ``data`` must stay unchanged while the entry lives (bytes always do; do not reuse a bytearray). An int8
    entry comes back as stored (:meth:`PrefixEntry.from_int8`: codes and scales viewing ``data``); the window
    gather dequantizes it, fused, into the batch buffer, and ``keys``/``values`` dequantize on first access.

    With ``device``, the entry is served there: the stored tensors are copied to it as they are stored
    (int8 codes and their scales, half the bytes of bfloat16) and cast or dequantized there, so the host
    does no arithmetic on them.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CacheError(f"prefix blob must be bytes, got {type(data).__name__}")
    try:
        view = memoryview(data).cast("B")  # one byte per item, whatever the caller's format
    except TypeError as error:
        raise CacheError(f"prefix blob is not a contiguous byte buffer: {error}") from error
    size = view.nbytes
    if size < _PREFIX.size:
        raise CacheError(f"prefix blob truncated: {size} bytes, shorter than the {_PREFIX.size}-byte prefix")
    magic, version, header_length = _PREFIX.unpack_from(view)
    if magic != MAGIC:
        raise CacheError(f"prefix blob has magic {magic!r}, expected {MAGIC!r}: not a prefix entry")
    if version != CODEC_VERSION:
        raise CacheError(f"prefix blob has format version {version}, this codec reads {CODEC_VERSION}")
    if header_length > MAX_HEADER_BYTES:
        raise CacheError(f"prefix header length {header_length} exceeds {MAX_HEADER_BYTES} bytes")
    payload_start = _PREFIX.size + header_length
    if size < payload_start:
        raise CacheError(f"prefix blob truncated: {size} bytes, header alone needs {payload_start}")
    header, covered = _checked_header(bytes(view[_PREFIX.size : payload_start]))  # the header alone is copied
    payload = view[payload_start:]
    if payload.nbytes != header["payload_bytes"]:
        raise CacheError(f"prefix payload is {payload.nbytes} bytes, header says {header['payload_bytes']}")
    if _digest(covered, payload) != header["checksum"]:
        raise CacheError("prefix blob checksum mismatch: header or payload changed after it was written")
    if header["key"] != key:
        raise CacheError(f"prefix blob was written under key {header['key']!r:.80}, not {key!r:.80}")
    if storage is not None and header["storage"] != storage:
        raise CacheError(f"prefix blob is stored as {header['storage']}, this reader asks for {storage}")
    tensors = view_payload(payload, header["storage"], tuple(header["shape"]))
    if device is not None:
        # Asynchronous from page-locked memory (a pinned read buffer); the host allocator keeps it until copied.
        tensors = {name: tensor.to(device, non_blocking=tensor.is_pinned()) for name, tensor in tensors.items()}
    length, next_position = header["length"], header["next_position"]
    if header["storage"] == "int8":
        # Served as stored: the window gather dequantizes it once, fused, where the window goes (entry.py).
        stored = Int8KV(
            tensors["keys"], tensors["values"], tensors["keys_scale"], tensors["values_scale"], _DTYPES[header["dtype"]]
        )
        return PrefixEntry.from_int8(stored, length=length, next_position=next_position)
    original = _DTYPES[header["dtype"]]  # the stored precision is the entry's own: views served as they are
    keys, values = tensors["keys"].to(original), tensors["values"].to(original)
    return PrefixEntry(keys=keys, values=values, length=length, next_position=next_position)


def _pack(header: dict[str, Any], payload: bytes) -> bytes:
    """Prefix, canonical header (with its size and checksum added, padded to align the payload) and payload."""
    header = {key: value for key, value in header.items() if key != "checksum"}
    header["payload_bytes"] = len(payload)
    header["checksum"] = _checksum(header, payload)
    header_bytes = _canonical_json(header)
    header_bytes += b" " * (-(_PREFIX.size + len(header_bytes)) % _PAYLOAD_ALIGN)  # JSON ignores trailing spaces
    return b"".join((_PREFIX.pack(MAGIC, CODEC_VERSION, len(header_bytes)), header_bytes, payload))


def _canonical_json(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _checksum(header: dict[str, Any], payload: bytes | memoryview) -> str:
    """xxh3-128 over the canonical header without ``checksum``, then the payload."""
    return _digest(_canonical_json({key: value for key, value in header.items() if key != "checksum"}), payload)


def _digest(covered: bytes, payload: bytes | memoryview) -> str:
    digest = xxhash.xxh3_128()
    digest.update(covered)
    digest.update(payload)
    return _CHECKSUM_PREFIX + digest.hexdigest()


def _checked_header(raw: bytes) -> tuple[dict[str, Any], bytes]:
    """The checked header that ``raw`` holds and the canonical bytes its checksum covers (the header without
    ``checksum``). Both depend on ``raw`` alone, so the last few thousand are kept: a warm read of an entry read
    before neither parses nor re-serializes JSON (about 50 us of a 0.6 ms read of a 2.9 MB int8 entry with cold
    CPU caches, ``bench/host.py``). The checksum itself is computed on every read. Callers must not change
    the returned header."""
    kept = _headers.get(raw)
    if kept is None:
        header = _parse_header(raw)
        kept = header, _canonical_json({key: value for key, value in header.items() if key != "checksum"})
        _headers.put(raw, kept)
    return kept


def _checked_tensors(entry: PrefixEntry) -> tuple[torch.Tensor, torch.Tensor]:
    keys, values = entry.keys, entry.values
    if not isinstance(keys, torch.Tensor) or not isinstance(values, torch.Tensor):
        raise CacheError(f"prefix keys and values must be tensors, got {type(keys).__name__}, {type(values).__name__}")
    if keys.dim() != 4:
        raise CacheError(
            f"prefix keys must be [band_layers, kv_heads, length, head_dim], got shape {tuple(keys.shape)}"
        )
    if keys.shape != values.shape:
        raise CacheError(f"prefix keys {tuple(keys.shape)} and values {tuple(values.shape)} differ in shape")
    if keys.dtype != values.dtype:
        raise CacheError(f"prefix keys ({keys.dtype}) and values ({values.dtype}) differ in dtype")
    _dtype_name(keys.dtype)  # raises for dtypes the codec does not carry
    if not _is_int(entry.length) or entry.length != keys.shape[2]:
        raise CacheError(f"prefix length {entry.length!r} must equal the token axis of keys, {keys.shape[2]}")
    if not _is_int(entry.next_position) or entry.next_position < 0:
        raise CacheError(f"prefix next_position {entry.next_position!r} must be an int >= 0")
    # safetensors needs contiguous CPU tensors; detach so no autograd graph is kept alive
    keys, values = keys.detach().cpu().contiguous(), values.detach().cpu().contiguous()
    if keys.untyped_storage().data_ptr() == values.untyped_storage().data_ptr():
        # views of one cache tensor: safetensors refuses to save tensors that share memory
        values = values.clone()
    return keys, values


def _checked_int8(entry: PrefixEntry) -> Int8KV:
    """An int8 entry's codes and scales, checked as :func:`_checked_tensors` checks keys and values."""
    stored = entry.int8
    assert stored is not None
    shape = stored.keys.shape
    if stored.keys.dim() != 4 or stored.values.shape != shape:
        raise CacheError(f"prefix int8 codes {tuple(shape)} and {tuple(stored.values.shape)} are not one 4-D shape")
    layers, heads, length, dim = shape
    if stored.keys_scale.shape != (layers, heads, 1, dim) or stored.values_scale.shape != (layers, heads, length, 1):
        raise CacheError(
            f"prefix int8 scales {tuple(stored.keys_scale.shape)}, {tuple(stored.values_scale.shape)} do not fit "
            f"codes {tuple(shape)}"
        )
    if not _is_int(entry.length) or entry.length != length:
        raise CacheError(f"prefix length {entry.length!r} must equal the token axis of keys, {length}")
    if not _is_int(entry.next_position) or entry.next_position < 0:
        raise CacheError(f"prefix next_position {entry.next_position!r} must be an int >= 0")
    if not entry.is_finite():
        raise UnstorableEntry("prefix int8 scales hold NaN or inf; a non-finite entry is never stored")
    # safetensors saves contiguous CPU tensors that share no memory: each is copied into its own
    tensors = [t.detach().cpu().contiguous().clone() for t in (stored.keys, stored.values)]
    scales = [t.detach().cpu().to(torch.float32).contiguous().clone() for t in (stored.keys_scale, stored.values_scale)]
    return Int8KV(tensors[0], tensors[1], scales[0], scales[1], stored.dtype)


def _dtype_name(dtype: torch.dtype) -> str:
    for name, candidate in _DTYPES.items():
        if candidate == dtype:
            return name
    raise CacheError(f"prefix tensors have dtype {dtype}; the codec stores {', '.join(_DTYPES)}")


def _require_float16_range(tensor: torch.Tensor, name: str) -> None:
    if tensor.numel() and not bool(tensor.abs().le(_FLOAT16_MAX).all()):
        raise UnstorableEntry(
            f"prefix {name} hold values outside float16's finite range (|x| <= {_FLOAT16_MAX:g}); "
            "store them as 'bfloat16' or 'float32'"
        )


def _require_no_overflow(stored: torch.Tensor, name: str, storage: str) -> None:
    # The original is finite (checked first), so any non-finite stored value is an overflow of the cast.
    if not all_finite(stored):
        raise UnstorableEntry(f"prefix {name} hold finite values that overflow {storage}; store them as 'float32'")


def _quantize_int8(tensor: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 codes and float32 scales, one scale per slice along ``dim`` (finite input)."""
    wide = tensor.to(torch.float32)  # [band_layers, kv_heads, length, head_dim]
    scale_shape = list(wide.shape)
    scale_shape[dim] = 1
    if wide.shape[dim] == 0:  # empty prefix: nothing to scale
        return torch.zeros(wide.shape, dtype=torch.int8), torch.zeros(scale_shape, dtype=torch.float32)
    scales = wide.abs().amax(dim=dim, keepdim=True) / _INT8_LEVELS  # [*scale_shape]
    safe = torch.where(scales > 0, scales, torch.ones_like(scales))  # an all-zero slice codes to zeros
    codes = torch.round(wide / safe).clamp_(-_INT8_LEVELS, _INT8_LEVELS).to(torch.int8)
    return codes.contiguous(), scales.contiguous()


def _parse_header(raw: bytes) -> dict[str, Any]:
    header = json_object(raw, "prefix header")
    if set(header) != _HEADER_FIELDS:
        missing = sorted(_HEADER_FIELDS - set(header))
        extra = sorted(set(header) - _HEADER_FIELDS)
        raise CacheError(f"prefix header fields wrong: missing {missing}, unexpected {extra}")
    if header["format"] != CODEC_VERSION or not _is_int(header["format"]):
        raise CacheError(f"prefix header format {header['format']!r} != {CODEC_VERSION}")
    if not isinstance(header["key"], str) or not header["key"] or len(header["key"]) > _MAX_KEY_CHARS:
        raise CacheError(f"prefix header key {header['key']!r:.80} is not a non-empty str")
    if header["storage"] not in _STORAGES:
        raise CacheError(f"prefix header storage {header['storage']!r} is not one of {_STORAGES}")
    if header["dtype"] not in _DTYPES:
        raise CacheError(f"prefix header dtype {header['dtype']!r} is not one of {tuple(_DTYPES)}")
    shape = header["shape"]
    if not isinstance(shape, list) or len(shape) != 4 or not all(_is_int(n) and n >= 0 for n in shape):
        raise CacheError(f"prefix header shape {shape!r} is not 4 ints >= 0")
    if not _is_int(header["length"]) or header["length"] != shape[2]:
        raise CacheError(f"prefix header length {header['length']!r} != token axis {shape[2]}")
    if not _is_int(header["next_position"]) or header["next_position"] < 0:
        raise CacheError(f"prefix header next_position {header['next_position']!r} is not an int >= 0")
    if not _is_int(header["payload_bytes"]) or header["payload_bytes"] < 0:
        raise CacheError(f"prefix header payload_bytes {header['payload_bytes']!r} is not an int >= 0")
    if not isinstance(header["checksum"], str):
        raise CacheError(f"prefix header checksum {header['checksum']!r} is not a string")
    return header


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
