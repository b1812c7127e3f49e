"""Image strings that are not plain base64 reach the engine as images: decoded, or reported, never scored as text."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from langchain_core.documents import Document
from minirerank_integrations import CandidateError, MiniReranker

from langchain_minirerank import MiniRerankCompressor


def test_variant_encodings_score_as_the_image_and_damage_is_an_error(
    engine: MiniReranker, png_bytes: Callable[[int], bytes]
) -> None:
    data = png_bytes(5)
    plain = base64.b64encode(data).decode()
    compressor = MiniRerankCompressor(model=engine, top_n=None)
    same_image = [
        Document(id="plain", page_content=plain),
        Document(id="bytes-repr", page_content=str(base64.b64encode(data))),
        Document(id="urlsafe", page_content=base64.urlsafe_b64encode(data).decode().rstrip("=")),
    ]
    scored = compressor.compress_documents(same_image, "a red circle")
    values = {d.id: d.metadata["relevance_score"] for d in scored}
    assert values["bytes-repr"] == pytest.approx(values["plain"], abs=1e-6)
    assert values["urlsafe"] == pytest.approx(values["plain"], abs=1e-6)

    damaged = Document(id="damaged", page_content=plain[:5] + "!" + plain[6:])
    with pytest.raises(CandidateError) as info:
        compressor.compress_documents([same_image[0], damaged], "a red circle")
    assert info.value.index == 1 and info.value.candidate_id == "damaged"
    skipping = MiniRerankCompressor(model=engine, top_n=None, on_error="skip")
    kept = skipping.compress_documents([same_image[0], damaged], "a red circle")
    assert [d.id for d in kept] == ["plain"]
