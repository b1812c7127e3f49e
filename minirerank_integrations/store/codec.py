"""Prefix entries to bytes and back: a fixed prefix, a JSON header with a checksum, a safetensors payload.

This is the ``Disk`` half of the prefix store (the store itself only moves bytes). Layout of one blob::

    b"MRPX"                      4 bytes   magic
    version                      2 bytes   big-endian unsigned, == CODEC_VERSION
    header_length                4 bytes   big-endian unsigned, bytes of the JSON header that follows
    header                       header_length bytes of UTF-8 JSON (canonical: sorted keys, no spaces)
    payload                      safetensors bytes, exactly header["payload_bytes"] long

Header fields: ``format`` (== CODEC_VERSION), ``key`` (the store key the entry was written under: a blob
read under another key, e.g. swapped or copied rows, is refused), ``storage`` (how tensors are stored; a
reader may demand one, so an int8 or float16 entry is never served where float32 is asked for), ``dtype`` (the dtype
the entry had when encoded, restored on decode), ``shape`` ([band_layers, kv_heads, length, head_dim],
keys and values alike), ``length``, ``next_position``, ``payload_bytes`` and ``checksum``: the blake2b-256
digest of the canonical header without ``checksum`` followed by the payload, so that a changed header field
is caught as surely as a changed payload byte. Tensors are read with ``safetensors`` only: nothing here
unpickles, and nothing calls ``torch.load``.

Storage modes and their error bounds (``x`` an original element, ``y`` the decoded one), checked by
``tests/test_prefix_codec.py``:

* ``"float32"``: lossless for float32, bfloat16 and float16 entries (bit-exact, NaN and inf included).
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
  Needs finite inputs, else encoding raises :class:`CacheError`. A blob is about a quarter of float32
  (half of bfloat16) plus the scales.
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any, Literal, get_args

import torch
from safetensors.torch import load as _safetensors_load
from safetensors.torch import save as _safetensors_save

from ..errors import CacheError, ConfigError
from .entry import PrefixEntry

__all__ = ["CODEC_VERSION", "Storage", "UnstorableEntry", "decode_entry", "encode_entry"]

CODEC_VERSION = 2  # 2: the header binds the key; bump on any change to the layout or the header; older blobs then decode as CacheError
Storage = Literal["float32", "float16", "bfloat16", "int8"]


class UnstorableEntry(CacheError):
    """A well-formed entry whose values the storage precision cannot hold (float16 or bfloat16 overflow, NaN or
    inf for int8). A backend does not store it, and the rerank that computed it goes on."""


MAGIC = b"MRPX"
_PREFIX = struct.Struct(">4sHI")  # magic, version, header_length: 10 bytes
MAX_HEADER_BYTES = 2**16  # a real header is ~300 bytes; a larger length is damage, not a header

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
_STORAGES: tuple[str, ...] = get_args(Storage)
_FLOAT16_MAX = 65504.0  # largest finite float16
_INT8_LEVELS = 127  # symmetric codes in [-127, 127]; -128 is never produced
_MAX_KEY_CHARS = 1024  # store keys are hex digests (64 chars); a longer one is damage
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


def encode_entry(entry: PrefixEntry, *, key: str, storage: Storage = "float32") -> bytes:
    """The bytes of ``entry`` stored under ``key``, as ``storage`` (see the module docstring for each mode's
    error bound). ``key`` goes into the checksummed header: :func:`decode_entry` refuses the blob under
    any other key.

    Raises :class:`ConfigError` for an unknown ``storage`` or a key that is not a non-empty str, and
    :class:`CacheError` for an entry that
    cannot be stored (not 4-D, keys and values differing, ``length`` not the token axis, a dtype other
    than float32/bfloat16/float16, or values a lossy mode cannot represent).
    """
    if storage not in _STORAGES:
        raise ConfigError(f"prefix storage {storage!r} is unknown; use one of {', '.join(_STORAGES)}")
    if not isinstance(key, str) or not key or len(key) > _MAX_KEY_CHARS:
        raise ConfigError(f"prefix key must be a non-empty str of at most {_MAX_KEY_CHARS} chars, got {key!r:.80}")
    keys, values = _checked_tensors(entry)
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
        stored = _DTYPES[storage]
        if storage == "float16" and keys.dtype != torch.float16:
            _require_float16_range(keys, "keys")
            _require_float16_range(values, "values")
        tensors = {"keys": keys.to(stored), "values": values.to(stored)}
        if storage == "bfloat16" and keys.dtype == torch.float32:
            _require_no_overflow(keys, tensors["keys"], "keys", storage)
            _require_no_overflow(values, tensors["values"], "values", storage)
    payload = _safetensors_save(tensors)
    header: dict[str, Any] = {
        "format": CODEC_VERSION,
        "key": key,
        "storage": storage,
        "dtype": dtype_name,
        "shape": list(keys.shape),
        "length": entry.length,
        "next_position": entry.next_position,
        "payload_bytes": len(payload),
    }
    return _pack(header, payload)


def decode_entry(data: bytes, *, key: str, storage: Storage | None = None) -> PrefixEntry:
    """The entry that :func:`encode_entry` turned into ``data`` under ``key``; any damage raises
    :class:`CacheError`, and so does a blob written under another key or, when ``storage`` is given, stored
    in another precision (a float32 reader is never served an int8 or float16 entry).

    Checked before anything is served: magic, version, header size and JSON, every header field's type
    and range, payload size, checksum, the key and storage, then the tensors' names, dtypes and shapes
    against the header.
    Tensors come back on the CPU, contiguous, in the dtype the entry had when it was encoded.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CacheError(f"prefix blob must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < _PREFIX.size:
        raise CacheError(f"prefix blob truncated: {len(data)} bytes, shorter than the {_PREFIX.size}-byte prefix")
    magic, version, header_length = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise CacheError(f"prefix blob has magic {magic!r}, expected {MAGIC!r}: not a prefix entry")
    if version != CODEC_VERSION:
        raise CacheError(f"prefix blob has format version {version}, this codec reads {CODEC_VERSION}")
    if header_length > MAX_HEADER_BYTES:
        raise CacheError(f"prefix header length {header_length} exceeds {MAX_HEADER_BYTES} bytes")
    payload_start = _PREFIX.size + header_length
    if len(data) < payload_start:
        raise CacheError(f"prefix blob truncated: {len(data)} bytes, header alone needs {payload_start}")
    header = _parse_header(data[_PREFIX.size : payload_start])
    payload = data[payload_start:]
    if len(payload) != header["payload_bytes"]:
        raise CacheError(f"prefix payload is {len(payload)} bytes, header says {header['payload_bytes']}")
    if _checksum(header, payload) != header["checksum"]:
        raise CacheError("prefix blob checksum mismatch: header or payload changed after it was written")
    if header["key"] != key:
        raise CacheError(f"prefix blob was written under key {header['key']!r:.80}, not {key!r:.80}")
    if storage is not None and header["storage"] != storage:
        raise CacheError(f"prefix blob is stored as {header['storage']}, this reader asks for {storage}")
    try:
        tensors = _safetensors_load(payload)
    except Exception as error:  # safetensors raises its own SafetensorError and others on bad bytes
        raise CacheError(f"prefix payload is not readable safetensors: {error}") from error
    keys, values = _restore_tensors(header, tensors)
    return PrefixEntry(keys=keys, values=values, length=header["length"], next_position=header["next_position"])


def _pack(header: dict[str, Any], payload: bytes) -> bytes:
    """Prefix, canonical header (with its checksum added) and payload, joined."""
    header = {key: value for key, value in header.items() if key != "checksum"}
    header["checksum"] = _checksum(header, payload)
    header_bytes = _canonical_json(header)
    return _PREFIX.pack(MAGIC, CODEC_VERSION, len(header_bytes)) + header_bytes + payload


def _canonical_json(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _checksum(header: dict[str, Any], payload: bytes) -> str:
    """blake2b-256 over the canonical header without ``checksum``, then the payload."""
    digest = hashlib.blake2b(digest_size=32)
    digest.update(_canonical_json({key: value for key, value in header.items() if key != "checksum"}))
    digest.update(payload)
    return "blake2b:" + digest.hexdigest()


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


def _dtype_name(dtype: torch.dtype) -> str:
    for name, candidate in _DTYPES.items():
        if candidate == dtype:
            return name
    raise CacheError(f"prefix tensors have dtype {dtype}; the codec stores {', '.join(_DTYPES)}")


def _require_float16_range(tensor: torch.Tensor, name: str) -> None:
    if tensor.numel() and not bool(tensor.abs().le(_FLOAT16_MAX).all()):  # NaN fails the comparison too
        raise UnstorableEntry(
            f"prefix {name} hold values outside float16's finite range (|x| <= {_FLOAT16_MAX:g}); "
            "store them as 'bfloat16' or 'float32'"
        )


def _require_no_overflow(original: torch.Tensor, stored: torch.Tensor, name: str, storage: str) -> None:
    if stored.numel() and not bool((torch.isfinite(stored) | ~torch.isfinite(original)).all()):
        raise UnstorableEntry(f"prefix {name} hold finite values that overflow {storage}; store them as 'float32'")


def _quantize_int8(tensor: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 codes and float32 scales, one scale per slice along ``dim``."""
    if tensor.numel() and not bool(torch.isfinite(tensor).all()):
        raise UnstorableEntry("prefix tensors hold NaN or inf; int8 storage needs finite values")
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
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise CacheError(f"prefix header is not JSON: {error}") from error
    if not isinstance(header, dict):
        raise CacheError(f"prefix header must be a JSON object, got {type(header).__name__}")
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


def _restore_tensors(header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Check the payload's tensors against the header, then dequantize or cast back to ``header['dtype']``."""
    band_layers, kv_heads, length, head_dim = header["shape"]
    shape = torch.Size([band_layers, kv_heads, length, head_dim])
    storage, original = header["storage"], _DTYPES[header["dtype"]]
    expected: dict[str, tuple[torch.dtype, torch.Size]]
    if storage == "int8":
        expected = {
            "keys": (torch.int8, shape),
            "values": (torch.int8, shape),
            "keys_scale": (torch.float32, torch.Size([band_layers, kv_heads, 1, head_dim])),
            "values_scale": (torch.float32, torch.Size([band_layers, kv_heads, length, 1])),
        }
    else:
        expected = {"keys": (_DTYPES[storage], shape), "values": (_DTYPES[storage], shape)}
    if set(tensors) != set(expected):
        raise CacheError(f"prefix payload holds tensors {sorted(tensors)}, expected {sorted(expected)}")
    for name, (dtype, tensor_shape) in expected.items():
        tensor = tensors[name]
        if tensor.dtype != dtype or tensor.shape != tensor_shape:
            raise CacheError(
                f"prefix tensor {name!r} is {tensor.dtype} {tuple(tensor.shape)}, "
                f"header implies {dtype} {tuple(tensor_shape)}"
            )
    if storage != "int8":
        return tensors["keys"].to(original).contiguous(), tensors["values"].to(original).contiguous()
    restored = []
    for name in ("keys", "values"):
        scales = tensors[f"{name}_scale"]
        if scales.numel() and not bool(((scales >= 0) & torch.isfinite(scales)).all()):
            raise CacheError(f"prefix {name}_scale holds negative or non-finite scales")
        wide = tensors[name].to(torch.float32) * scales  # [band_layers, kv_heads, length, head_dim]
        restored.append(wide.to(original).contiguous())
    return restored[0], restored[1]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
