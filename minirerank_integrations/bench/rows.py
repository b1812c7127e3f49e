"""The rows of a ``minirerank bench`` result: every row carries the same fields (None where one does not apply)."""

from __future__ import annotations

__all__ = ["ROW_FIELDS", "full_row"]

#: The fields every row of ``rows`` carries (None where a field does not apply).
ROW_FIELDS = (
    "workload",
    "image_size",
    "image_tokens",
    "method",
    "state",
    "n",
    "pairs_timed",
    "scaled",
    "composed",
    "seconds_per_query",
    "seconds_per_pair",
    "ratio_to_dense_official",
    "peak_rss_bytes",
    "peak_gpu_bytes",
    "store_bytes_read_per_pair",
    "store_read_mb_per_s",
    "ingestion_docs_per_s",
    "stored_bytes_per_doc",
    "stored_bytes_per_doc_int8",
    "band_read_bytes_per_doc",
    "full_kv_bytes_per_doc",
    "stored_vs_full_kv",
    "prefix_tokens",
    "suffix_tokens",
)


def full_row(**row: object) -> dict[str, object]:
    """``row`` with every field of :data:`ROW_FIELDS`, in that order (None where absent).

    Raises:
        ValueError: ``row`` names a field that is not one of :data:`ROW_FIELDS`.
    """
    extra = set(row) - set(ROW_FIELDS)
    if extra:
        raise ValueError(f"unknown row fields {sorted(extra)}")
    return {name: row.get(name) for name in ROW_FIELDS}
