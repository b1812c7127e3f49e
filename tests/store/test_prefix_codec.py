"""Prefix codec: exact round trips, measured error bounds of the lossy modes, and every kind of damage."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save as safetensors_save

from minirerank_integrations.errors import CacheError, ConfigError
from minirerank_integrations.store import PrefixEntry
from minirerank_integrations.store.codec import CODEC_VERSION, UnstorableEntry, _pack, decode_entry, encode_entry

PREFIX = struct.Struct(">4sHI")


def make_entry(
    dtype: torch.dtype = torch.float32,
    shape: tuple[int, int, int, int] = (2, 3, 7, 16),
    seed: int = 0,
    next_position: int = 11,
) -> PrefixEntry:
    generator = torch.Generator().manual_seed(seed)
    band_layers, kv_heads, length, head_dim = shape
    # keys with an outlier channel, as real post-RoPE keys have
    keys = torch.randn(shape, generator=generator) * torch.linspace(0.1, 8.0, head_dim)
    values = torch.randn(shape, generator=generator) * 2.0
    return PrefixEntry(keys=keys.to(dtype), values=values.to(dtype), length=length, next_position=next_position)


def split(blob: bytes) -> tuple[bytes, dict, bytes]:
    magic, version, header_length = PREFIX.unpack_from(blob)
    header = json.loads(blob[PREFIX.size : PREFIX.size + header_length])
    return magic, header, blob[PREFIX.size + header_length :]


def join(header: dict, payload: bytes, magic: bytes = b"MRPX", version: int = CODEC_VERSION) -> bytes:
    header_bytes = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    return PREFIX.pack(magic, version, len(header_bytes)) + header_bytes + payload


# -- round trips ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "storage"),
    [
        (torch.float32, "float32"),
        (torch.bfloat16, "float32"),
        (torch.float16, "float32"),
        (torch.bfloat16, "bfloat16"),
        (torch.float16, "float16"),
    ],
)
def test_lossless_modes_round_trip_bit_exact(dtype: torch.dtype, storage: str) -> None:
    entry = make_entry(dtype)
    decoded = decode_entry(encode_entry(entry, key="k", storage=storage), key="k")  # type: ignore[arg-type]
    assert decoded.keys.dtype == dtype and decoded.values.dtype == dtype
    assert torch.equal(decoded.keys, entry.keys) and torch.equal(decoded.values, entry.values)
    assert (decoded.length, decoded.next_position) == (entry.length, entry.next_position)


@pytest.mark.parametrize("storage", ["float32", "bfloat16", "float16", "int8"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_no_storage_takes_nan_or_inf(storage: str, dtype: torch.dtype) -> None:
    for bad in (float("nan"), float("inf"), -float("inf")):
        for side in ("keys", "values"):
            entry = make_entry(dtype)
            getattr(entry, side)[1, 2, 3, 4] = bad
            with pytest.raises(UnstorableEntry, match="NaN or inf"):
                encode_entry(entry, key="k", storage=storage)  # type: ignore[arg-type]
    huge = make_entry(torch.float32)
    huge.keys[0, 0, 0, 0] = 3e38  # finite, but a float32 sum of it overflows: the exact check must not refuse it
    huge.keys[0, 0, 0, 1] = 3e38
    decoded = decode_entry(encode_entry(huge, key="k", storage="float32"), key="k")
    assert torch.equal(decoded.keys, huge.keys)


def test_non_contiguous_input_round_trips() -> None:
    base = make_entry(shape=(2, 7, 3, 16))
    keys = base.keys.transpose(1, 2)  # [2, 3, 7, 16], not contiguous
    values = base.values.transpose(1, 2)
    entry = PrefixEntry(keys=keys, values=values, length=7, next_position=3)
    decoded = decode_entry(encode_entry(entry, key="k", storage="float32"), key="k")
    assert torch.equal(decoded.keys, keys) and torch.equal(decoded.values, values)


@pytest.mark.parametrize("storage", ["float32", "bfloat16", "float16", "int8"])
def test_keys_and_values_sharing_one_tensor_round_trip(storage: str) -> None:
    cache = make_entry(shape=(4, 3, 7, 16)).keys  # [2 * band_layers, kv_heads, length, head_dim]
    entry = PrefixEntry(keys=cache[:2], values=cache[2:], length=7, next_position=0)
    same = PrefixEntry(keys=cache[:2], values=cache[:2], length=7, next_position=0)
    for shared in (entry, same):
        decoded = decode_entry(encode_entry(shared, key="k", storage="float32"), key="k")
        assert torch.equal(decoded.keys, shared.keys) and torch.equal(decoded.values, shared.values)
        assert decode_entry(encode_entry(shared, key="k", storage=storage), key="k").keys.shape == (2, 3, 7, 16)  # type: ignore[arg-type]


@pytest.mark.parametrize("storage", ["float32", "bfloat16", "float16", "int8"])
def test_empty_prefix_round_trips(storage: str) -> None:
    entry = make_entry(shape=(2, 3, 0, 16), next_position=0)
    decoded = decode_entry(encode_entry(entry, key="k", storage=storage), key="k")  # type: ignore[arg-type]
    assert decoded.keys.shape == (2, 3, 0, 16) and decoded.length == 0


def test_blob_is_deterministic() -> None:
    entry = make_entry()
    assert encode_entry(entry, key="k", storage="int8") == encode_entry(entry, key="k", storage="int8")


# -- measured error bounds (the ones the codec's docstring states) ---------------------------------------


def test_float16_storage_error_bound() -> None:
    entry = make_entry()
    keys = entry.keys.clone()
    keys[0, 0, 0, :4] = torch.tensor([1e-6, -3e-7, 60000.0, 1e-9])  # subnormal and near-max float16
    entry = PrefixEntry(keys=keys, values=entry.values, length=entry.length, next_position=entry.next_position)
    decoded = decode_entry(encode_entry(entry, key="k", storage="float16"), key="k")
    assert decoded.keys.dtype == torch.float32
    for original, restored in ((entry.keys, decoded.keys), (entry.values, decoded.values)):
        error = (original - restored).abs()
        bound = torch.maximum(original.abs() * 2**-11, torch.tensor(2**-25))
        assert bool((error <= bound).all()), float((error - bound).max())
        assert float(error.max()) > 0  # float32 inputs really were rounded


def test_bfloat16_storage_error_bound() -> None:
    entry = make_entry()
    decoded = decode_entry(encode_entry(entry, key="k", storage="bfloat16"), key="k")
    for original, restored in ((entry.keys, decoded.keys), (entry.values, decoded.values)):
        error = (original - restored).abs()
        assert bool((error <= original.abs() * 2**-8).all())
        assert float(error.max()) > 0


def _int8_scales(tensor: torch.Tensor, dim: int) -> torch.Tensor:
    return tensor.float().abs().amax(dim=dim, keepdim=True) / 127


def test_int8_error_is_at_most_half_a_scale_per_group() -> None:
    entry = make_entry(shape=(2, 4, 33, 32))
    decoded = decode_entry(encode_entry(entry, key="k", storage="int8"), key="k")
    assert decoded.keys.dtype == torch.float32
    key_scales = _int8_scales(entry.keys, dim=2)  # one per (layer, head, channel)
    value_scales = _int8_scales(entry.values, dim=3)  # one per (layer, head, token)
    key_error = (entry.keys - decoded.keys).abs()
    value_error = (entry.values - decoded.values).abs()
    slack = 1e-6  # float32 arithmetic in the division and the product
    assert bool((key_error <= key_scales / 2 * (1 + slack)).all())
    assert bool((value_error <= value_scales / 2 * (1 + slack)).all())
    # the bound is tight enough to mean something: errors reach a good part of it
    assert float((key_error / key_scales).max()) > 0.4


def test_int8_bound_for_bfloat16_entries_adds_half_an_ulp() -> None:
    entry = make_entry(torch.bfloat16, shape=(2, 4, 33, 32))
    decoded = decode_entry(encode_entry(entry, key="k", storage="int8"), key="k")
    assert decoded.keys.dtype == torch.bfloat16
    for original, restored, dim in ((entry.keys, decoded.keys, 2), (entry.values, decoded.values, 3)):
        error = (original.float() - restored.float()).abs()
        bound = _int8_scales(original, dim) / 2 * (1 + 1e-6) + restored.float().abs() * 2**-8
        assert bool((error <= bound).all())


def test_int8_handles_all_zero_groups() -> None:
    entry = make_entry()
    entry.keys[:, :, :, 0] = 0  # a key channel that is zero on every token
    entry.values[:, :, 0, :] = 0  # a value token that is all zeros
    decoded = decode_entry(encode_entry(entry, key="k", storage="int8"), key="k")
    assert bool((decoded.keys[:, :, :, 0] == 0).all()) and bool((decoded.values[:, :, 0, :] == 0).all())
    assert bool(torch.isfinite(decoded.keys).all())


def test_lossy_modes_refuse_values_they_cannot_hold() -> None:
    entry = make_entry()
    entry.keys[0, 0, 0, 0] = 70000.0
    with pytest.raises(CacheError, match="float16"):
        encode_entry(entry, key="k", storage="float16")
    entry.keys[0, 0, 0, 0] = float("nan")
    with pytest.raises(CacheError, match="finite"):
        encode_entry(entry, key="k", storage="int8")


def test_int8_blob_is_smaller() -> None:
    entry = make_entry(shape=(2, 4, 64, 64))
    assert len(encode_entry(entry, key="k", storage="int8")) < 0.3 * len(
        encode_entry(entry, key="k", storage="float32")
    )


# -- bad entries on encode ---------------------------------------------------------------------------------


def test_encode_rejects_malformed_entries() -> None:
    good = make_entry()
    bad = [
        PrefixEntry(keys=good.keys[0], values=good.values[0], length=7, next_position=0),  # 3-D
        PrefixEntry(keys=good.keys, values=good.values[:, :, :5], length=7, next_position=0),
        PrefixEntry(keys=good.keys, values=good.values.double(), length=7, next_position=0),
        PrefixEntry(keys=good.keys.double(), values=good.values.double(), length=7, next_position=0),
        PrefixEntry(keys=good.keys, values=good.values, length=6, next_position=0),
        PrefixEntry(keys=good.keys, values=good.values, length=7, next_position=-1),
        PrefixEntry(keys=good.keys, values=good.values, length=True, next_position=0),  # type: ignore[arg-type]
    ]
    for entry in bad:
        with pytest.raises(CacheError):
            encode_entry(entry, key="k")
    with pytest.raises(ConfigError, match="int4"):
        encode_entry(good, key="k", storage="int4")  # type: ignore[arg-type]


# -- damage on decode ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("storage", ["float32", "int8"])
def test_every_tampered_header_field_is_refused(storage: str) -> None:
    blob = encode_entry(make_entry(), key="k", storage=storage)  # type: ignore[arg-type]
    magic, header, payload = split(blob)
    assert decode_entry(join(header, payload), key="k") is not None  # the test's re-assembly is faithful
    changes = {
        "format": [CODEC_VERSION + 1, str(CODEC_VERSION), None, float(CODEC_VERSION)],
        "key": ["k2", "K", "", 1, None, "k" * 2000],
        "storage": ["float16" if storage != "float16" else "float32", "int4", 1],
        "dtype": ["float16", "float64", None],
        "shape": [[2, 3, 7, 15], [2, 3, 7], [2, 3, 7, 16, 1], [2, 3, 7, -16], "2,3,7,16", [2, 3, 7, True]],
        "length": [header["length"] + 1, header["length"] - 1, str(header["length"]), True],
        "next_position": [header["next_position"] + 1, -1, None, 1.5],
        "payload_bytes": [header["payload_bytes"] + 1, header["payload_bytes"] - 1, -1, None],
        "checksum": [header["checksum"][:-1] + ("0" if header["checksum"][-1] != "0" else "1"), "", 0],
    }
    assert set(changes) == set(header)  # every field of the format is covered
    for field, replacements in changes.items():
        for replacement in replacements:
            tampered = dict(header, **{field: replacement})
            with pytest.raises(CacheError):
                decode_entry(join(tampered, payload), key="k")
    missing = {k: v for k, v in header.items() if k != "length"}
    extra = dict(header, comment="hi")
    for tampered in (missing, extra):
        with pytest.raises(CacheError, match="fields"):
            decode_entry(join(tampered, payload), key="k")


def test_fixed_prefix_damage_is_refused() -> None:
    blob = encode_entry(make_entry(), key="k")
    magic, header, payload = split(blob)
    header_length = PREFIX.unpack_from(blob)[2]
    body = blob[PREFIX.size :]
    cases = {
        "magic": b"MRPY" + blob[4:],
        "version": PREFIX.pack(b"MRPX", CODEC_VERSION + 1, header_length) + body,
        "version zero": PREFIX.pack(b"MRPX", 0, header_length) + body,
        "header longer": PREFIX.pack(b"MRPX", CODEC_VERSION, header_length + 1) + body,
        "header shorter": PREFIX.pack(b"MRPX", CODEC_VERSION, header_length - 1) + body,
        "header huge": PREFIX.pack(b"MRPX", CODEC_VERSION, 2**31) + body,
        "header not json": PREFIX.pack(b"MRPX", CODEC_VERSION, 4) + b"\xff\xfe{[" + payload,
        "header a list": join([], payload),  # type: ignore[arg-type]
        "trailing byte": blob + b"\x00",
    }
    for name, damaged in cases.items():
        with pytest.raises(CacheError):
            decode_entry(damaged, key="k")
        assert name


def test_flipped_payload_bytes_are_refused() -> None:
    blob = encode_entry(make_entry(), key="k", storage="int8")
    payload_start = len(blob) - split(blob)[2].__len__()
    for position in (payload_start, payload_start + 9, (payload_start + len(blob)) // 2, len(blob) - 1):
        damaged = bytearray(blob)
        damaged[position] ^= 0x01
        with pytest.raises(CacheError, match="checksum"):
            decode_entry(bytes(damaged), key="k")
    # a flipped bit in the header's JSON text is refused as well
    damaged = bytearray(blob)
    damaged[PREFIX.size + 30] ^= 0x01
    with pytest.raises(CacheError):
        decode_entry(bytes(damaged), key="k")


def test_truncated_blobs_are_refused() -> None:
    blob = encode_entry(make_entry(), key="k")
    for size in (0, 1, 4, 9, 10, 40, PREFIX.size + 150, len(blob) // 2, len(blob) - 1):
        with pytest.raises(CacheError):
            decode_entry(blob[:size], key="k")


def test_non_bytes_are_refused() -> None:
    with pytest.raises(CacheError, match="bytes"):
        decode_entry("MRPX", key="k")  # type: ignore[arg-type]


def _forge(tensors: dict[str, torch.Tensor], **header_changes: object) -> bytes:
    """A blob with a valid checksum whose tensors need not match its header."""
    payload = safetensors_save(tensors)
    header = {
        "format": CODEC_VERSION,
        "key": "k",
        "storage": "float32",
        "dtype": "float32",
        "shape": [2, 3, 7, 16],
        "length": 7,
        "next_position": 0,
        "payload_bytes": len(payload),
    }
    header.update(header_changes)
    return _pack(header, payload)


def test_payload_tensors_must_match_header_even_with_a_valid_checksum() -> None:
    keys, values = torch.zeros(2, 3, 7, 16), torch.ones(2, 3, 7, 16)
    assert decode_entry(_forge({"keys": keys, "values": values}), key="k").length == 7  # the forger is faithful
    forgeries = {
        "wrong name": _forge({"keys": keys, "vals": values}),
        "extra tensor": _forge({"keys": keys, "values": values, "other": torch.ones(1)}),
        "wrong dtype": _forge({"keys": keys, "values": values.half()}),
        "wrong shape": _forge({"keys": keys, "values": torch.zeros(2, 3, 8, 16)}),
        "keys and values differ": _forge({"keys": keys, "values": torch.zeros(2, 3, 7, 8)}),
        "int8 without scales": _forge({"keys": keys.to(torch.int8), "values": values.to(torch.int8)}, storage="int8"),
        "int8 negative scale": _forge(
            {
                "keys": keys.to(torch.int8),
                "values": values.to(torch.int8),
                "keys_scale": -torch.ones(2, 3, 1, 16),
                "values_scale": torch.ones(2, 3, 7, 1),
            },
            storage="int8",
        ),
        "not safetensors": _pack(
            {
                "format": CODEC_VERSION,
                "key": "k",
                "storage": "float32",
                "dtype": "float32",
                "shape": [2, 3, 7, 16],
                "length": 7,
                "next_position": 0,
                "payload_bytes": 12,
            },
            b"not tensors!",
        ),
    }
    for name, blob in forgeries.items():
        with pytest.raises(CacheError):
            decode_entry(blob, key="k")
        assert name


# -- reading without copying -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("dtype", "storage"), [(torch.float32, "float32"), (torch.bfloat16, "bfloat16")])
def test_decoded_tensors_view_the_read_buffer(dtype: torch.dtype, storage: str) -> None:
    entry = make_entry(dtype, shape=(2, 3, 40, 16))
    buffer = bytearray(encode_entry(entry, key="k", storage=storage))  # type: ignore[arg-type]
    decoded = decode_entry(buffer, key="k", storage=storage)  # type: ignore[arg-type]
    assert torch.equal(decoded.keys, entry.keys) and torch.equal(decoded.values, entry.values)
    start = torch.frombuffer(buffer, dtype=torch.uint8).data_ptr()
    for tensor in (decoded.keys, decoded.values):
        assert start <= tensor.data_ptr() < start + len(buffer)  # a view of the buffer, not a copy
        assert tensor.is_contiguous() and (tensor.data_ptr() - start) % 8 == 0  # aligned within the blob
    assert decode_entry(memoryview(buffer), key="k").keys.data_ptr() == decoded.keys.data_ptr()


def test_header_pads_the_payload_to_64_bytes() -> None:
    for seed in range(5):
        blob = encode_entry(make_entry(seed=seed, next_position=10**seed), key="k" * (seed + 1), storage="int8")
        payload = split(blob)[2]
        assert (len(blob) - len(payload)) % 64 == 0


def test_a_version_2_blob_is_refused() -> None:
    blob = encode_entry(make_entry(), key="k")
    _, header, payload = split(blob)
    old = join(dict(header, format=2), payload, version=2)
    with pytest.raises(CacheError, match="version 2"):
        decode_entry(old, key="k")


def _safetensors_with(meta: dict, data: bytes) -> bytes:
    raw = json.dumps(meta).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def test_hostile_safetensors_headers_are_refused_even_with_a_valid_checksum() -> None:
    f32 = {"dtype": "F32", "shape": [2, 3, 7, 16]}
    size = 2 * 3 * 7 * 16 * 4
    data = bytes(2 * size)
    header = {
        "format": CODEC_VERSION,
        "key": "k",
        "storage": "float32",
        "dtype": "float32",
        "shape": [2, 3, 7, 16],
        "length": 7,
        "next_position": 0,
    }
    faithful = _safetensors_with(
        {"keys": {**f32, "data_offsets": [0, size]}, "values": {**f32, "data_offsets": [size, 2 * size]}}, data
    )
    assert decode_entry(_pack(dict(header, payload_bytes=len(faithful)), faithful), key="k").length == 7
    payloads = {
        "overlap": {"keys": {**f32, "data_offsets": [0, size]}, "values": {**f32, "data_offsets": [0, size]}},
        "gap": {
            "keys": {**f32, "data_offsets": [0, size]},
            "values": {**f32, "data_offsets": [size + 4, 2 * size + 4]},
        },
        "past the end": {
            "keys": {**f32, "data_offsets": [0, size]},
            "values": {**f32, "data_offsets": [size, 3 * size]},
        },
        "span not its shape": {
            "keys": {**f32, "data_offsets": [0, size - 4]},
            "values": {**f32, "data_offsets": [size - 4, 2 * size]},
        },
        "negative offset": {"keys": {**f32, "data_offsets": [-size, 0]}, "values": {**f32, "data_offsets": [0, size]}},
        "unknown dtype": {
            "keys": {**f32, "dtype": "F64", "data_offsets": [0, size]},
            "values": {**f32, "data_offsets": [size, 2 * size]},
        },
        "object dtype": {
            "keys": {**f32, "dtype": {"a": 1}, "data_offsets": [0, size]},
            "values": {**f32, "data_offsets": [size, 2 * size]},
        },
        "bad shape": {
            "keys": {**f32, "shape": [2, -3, 7, 16], "data_offsets": [0, size]},
            "values": {**f32, "data_offsets": [size, 2 * size]},
        },
        "extra field": {
            "keys": {**f32, "data_offsets": [0, size], "x": 1},
            "values": {**f32, "data_offsets": [size, 2 * size]},
        },
        "not a list": [1, 2],
    }
    blobs = {name: _safetensors_with(meta, data) for name, meta in payloads.items()}  # type: ignore[arg-type]
    blobs["header length huge"] = struct.pack("<Q", 2**60) + faithful[8:]
    blobs["header length past the end"] = struct.pack("<Q", len(faithful)) + faithful[8:]
    blobs["header not json"] = struct.pack("<Q", 4) + b"\xff{[\x00" + data
    blobs["too short"] = b"\x01\x00"
    for name, payload in blobs.items():
        with pytest.raises(CacheError, match="safetensors|tensors"):
            decode_entry(_pack(dict(header, payload_bytes=len(payload)), payload), key="k")
        assert name


@pytest.mark.parametrize("storage", ["float32", "bfloat16", "int8"])
def test_decoding_onto_a_device_serves_the_same_entry_there(storage: str) -> None:
    entry = make_entry(torch.bfloat16, shape=(2, 3, 9, 16))
    blob = encode_entry(entry, key="k", storage=storage)  # type: ignore[arg-type]
    on_host = decode_entry(blob, key="k")
    # The meta device stands for a GPU on any machine: nothing is computed on the host past the checks.
    elsewhere = decode_entry(blob, key="k", device=torch.device("meta"))
    for tensor, reference in ((elsewhere.keys, on_host.keys), (elsewhere.values, on_host.values)):
        assert tensor.device.type == "meta" and tensor.dtype == reference.dtype and tensor.shape == reference.shape
    assert (elsewhere.length, elsewhere.next_position) == (on_host.length, on_host.next_position)
    with pytest.raises(CacheError, match="checksum"):  # still checked on the host first
        decode_entry(blob[:-1] + bytes([blob[-1] ^ 1]), key="k", device=torch.device("meta"))


# -- the kept safetensors layouts ------------------------------------------------------------------------------


def test_a_kept_layout_serves_only_the_shape_and_storage_it_was_checked_for() -> None:
    """A warm read reuses the layout checked for identical safetensors header bytes; a blob with those very bytes
    whose codec header claims another shape or storage is still refused (the layout is kept per shape and storage)."""
    keys, values = torch.zeros(2, 3, 7, 16), torch.ones(2, 3, 7, 16)
    tensors = {"keys": keys, "values": values}
    assert decode_entry(_forge(tensors), key="k").length == 7  # the layout is now kept
    assert decode_entry(_forge(tensors), key="k").length == 7  # and served from there
    for changes in ({"shape": [2, 3, 7, 8]}, {"shape": [2, 3, 14, 8], "length": 14}, {"storage": "float16"}):
        with pytest.raises(CacheError, match="tensor"):
            decode_entry(_forge(tensors, **changes), key="k")


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
@pytest.mark.parametrize("which", ["keys_scale", "values_scale"])
def test_int8_scales_are_checked_on_every_read_of_a_kept_layout(bad: float, which: str) -> None:
    codes = torch.ones(2, 3, 7, 16, dtype=torch.int8)
    scales = {"keys_scale": torch.ones(2, 3, 1, 16), "values_scale": torch.ones(2, 3, 7, 1)}
    good = _forge({"keys": codes, "values": codes.clone(), **scales}, storage="int8")
    assert decode_entry(good, key="k").int8 is not None  # the layout is now kept
    damaged = dict(scales)
    damaged[which] = scales[which].clone()
    damaged[which].view(-1)[5] = bad
    blob = _forge({"keys": codes, "values": codes.clone(), **damaged}, storage="int8")
    assert split(blob)[2][:200] == split(good)[2][:200]  # the same safetensors header: the kept layout applies
    with pytest.raises(CacheError, match="scales"):
        decode_entry(blob, key="k")


def test_a_kept_header_still_has_its_payload_checked_and_its_key_bound() -> None:
    blob = encode_entry(make_entry(), key="k", storage="int8")
    assert decode_entry(blob, key="k").length == 7  # its header is now kept
    assert decode_entry(blob, key="k").length == 7  # and served from there
    damaged = bytearray(blob)
    damaged[-3] ^= 0x10  # same header bytes, another payload
    with pytest.raises(CacheError, match="checksum"):
        decode_entry(bytes(damaged), key="k")
    with pytest.raises(CacheError, match="key"):
        decode_entry(blob, key="k2")
    with pytest.raises(CacheError, match="stored as int8"):
        decode_entry(blob, key="k", storage="float32")


@pytest.mark.parametrize("bad", [None, -1.0, float("nan")])
def test_int8_scales_apart_in_the_payload_are_checked_too(bad: float | None) -> None:
    """Safetensors writes both scales side by side (checked in one pass); a payload laid out otherwise is
    checked one scale tensor at a time."""
    shape, codes_bytes = [2, 3, 7, 16], 2 * 3 * 7 * 16
    keys_scale, values_scale = torch.ones(2, 3, 1, 16), torch.ones(2, 3, 7, 1)
    if bad is not None:
        values_scale[1, 2, 6, 0] = bad
    spans, data, position = {}, b"", 0
    parts = [("keys_scale", "F32", keys_scale), ("keys", "I8", None), ("values_scale", "F32", values_scale)]
    parts.append(("values", "I8", None))
    for name, dtype, tensor in parts:
        raw = tensor.numpy().tobytes() if tensor is not None else bytes(codes_bytes)
        dims = list(tensor.shape) if tensor is not None else shape
        spans[name] = {"dtype": dtype, "shape": dims, "data_offsets": [position, position + len(raw)]}
        data, position = data + raw, position + len(raw)
    payload = _safetensors_with(spans, data)
    header = {"format": CODEC_VERSION, "key": "k", "storage": "int8", "dtype": "float32", "shape": shape}
    blob = _pack(dict(header, length=7, next_position=0, payload_bytes=len(payload)), payload)
    if bad is None:
        assert decode_entry(blob, key="k").int8 is not None
    else:
        with pytest.raises(CacheError, match="scales"):
            decode_entry(blob, key="k")
