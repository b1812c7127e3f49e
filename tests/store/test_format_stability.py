"""The bytes a store writes are pinned: an entry encodes to the very blob earlier versions of this codec wrote
(CODEC_VERSION 3), so a directory or a Redis namespace filled before a refactor is read after it. A change
here is a format change: bump CODEC_VERSION (older entries then become misses) and update these digests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import xxhash

from minirerank_integrations.store import DiskPrefixStore, PrefixEntry
from minirerank_integrations.store.codec import CODEC_VERSION, decode_entry, encode_entry

# (storage, entry dtype) -> (blob bytes, xxh3-64 of the blob), as the codec wrote them before int8 entries were
# served as codes and scales and before disk.py was split (both left the format unchanged).
GOLDEN = {
    ("float32", "float32"): (1680, "5fe0bc1baf00bb89"),
    ("float32", "bfloat16"): (1680, "be9f2dec0fe6cc95"),
    ("bfloat16", "float32"): (1040, "ed1fe5a7f998df88"),
    ("bfloat16", "bfloat16"): (1040, "a5c7150f3dc19eed"),
    ("float16", "float32"): (1040, "aa618902b0ffebb7"),
    ("float16", "bfloat16"): (1040, "32dbbb8f689f9cf8"),
    ("int8", "float32"): (1072, "45e75b431d95d010"),
    ("int8", "bfloat16"): (1072, "cf75ec4e87365431"),
}


def golden_entry(dtype: str, seed: int = 3) -> PrefixEntry:
    generator = torch.Generator().manual_seed(seed)
    shape = (2, 2, 5, 8)
    keys = torch.randn(shape, generator=generator).to(getattr(torch, dtype))
    values = torch.randn(shape, generator=generator).to(getattr(torch, dtype))
    return PrefixEntry(keys=keys, values=values, length=shape[2], next_position=seed)


@pytest.mark.parametrize(("storage", "dtype"), sorted(GOLDEN))
def test_an_entry_encodes_to_the_pinned_blob(storage: str, dtype: str) -> None:
    assert CODEC_VERSION == 3
    blob = encode_entry(golden_entry(dtype), key="golden." + storage, storage=storage)  # type: ignore[arg-type]
    assert (len(blob), xxhash.xxh3_64_hexdigest(blob)) == GOLDEN[storage, dtype]
    decoded = decode_entry(blob, key="golden." + storage, storage=storage)  # type: ignore[arg-type]
    assert decoded.dtype == getattr(torch, dtype) and decoded.shape == (2, 2, 5, 8) and decoded.next_position == 3


def test_a_directory_keeps_its_files_and_row_names(tmp_path: Path) -> None:
    """The directory's layout: the mark, diskcache's database, value files under two hex levels, rows named
    ``key.storage`` whose blobs are exactly the codec's bytes."""
    store = DiskPrefixStore(tmp_path, storage="bfloat16", min_file_size=0)
    store.put("k", golden_entry("bfloat16"))
    store.close()
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert "minirerank-prefix-store.json" in files and "cache.db" in files
    (value_file,) = [name for name in files if name.endswith(".val")]
    assert len(value_file.split("/")) == 3
    blob = (tmp_path / value_file).read_bytes()
    assert blob == encode_entry(golden_entry("bfloat16"), key="k.bfloat16", storage="bfloat16")
