"""Bad input gets a clear, typed error naming the offending item; nothing computed is lost."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import pytest
from PIL import Image
from stock_reference import official_prompt, stock_score

from minirerank_integrations import (
    Candidate,
    CandidateError,
    ImageLoadError,
    InputError,
    MiniReranker,
    Query,
    RerankConfig,
)
from minirerank_integrations.engine.prompts import MAX_LENGTH


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def huge_png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels but holds almost no data (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    idat = zlib.compress(b"\x00" * 16)
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", len(idat))
        + b"IDAT"
        + idat
        + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    )


@pytest.fixture
def paper(tiny4_path):
    return MiniReranker.from_pretrained(tiny4_path, config="paper")


def _bad_candidate_error(reranker, bad: Candidate, index: int = 1) -> CandidateError:
    good = Candidate(text="a good candidate")
    candidates = [good] * index + [bad]
    with pytest.raises(CandidateError) as info:
        reranker.rerank("a query", candidates)
    assert info.value.index == index
    assert f"candidate {index}" in str(info.value)
    return info.value


def test_missing_file_names_the_path(paper, tmp_path):
    missing = tmp_path / "nowhere.png"
    error = _bad_candidate_error(paper, Candidate(images=[str(missing)], id="doc-7"))
    assert isinstance(error.cause, ImageLoadError)
    assert "nowhere.png" in str(error)
    assert "doc-7" in str(error)


def test_corrupt_image_bytes(paper, images):
    corrupt = png_bytes(images[0])[:40] + b"garbage" * 20
    error = _bad_candidate_error(paper, Candidate(images=[corrupt]))
    assert isinstance(error.cause, ImageLoadError)


def test_zero_byte_image_file(paper, tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    error = _bad_candidate_error(paper, Candidate(images=[empty]))
    assert "empty.png" in str(error)


def test_non_image_base64(paper):
    error = _bad_candidate_error(paper, Candidate(images=[base64.b64encode(b"hello world, not an image").decode()]))
    assert isinstance(error.cause, ImageLoadError)


def test_url_needs_an_explicit_fetcher(tiny4_path, images):
    url = "https://example.com/picture.png"
    reranker = MiniReranker.from_pretrained(tiny4_path, config="paper")
    error = _bad_candidate_error(reranker, Candidate(images=[url]))
    assert "image_fetcher" in str(error)
    fetched = []

    def fetcher(address: str) -> bytes:
        fetched.append(address)
        return png_bytes(images[0])

    with_fetcher = MiniReranker.from_pretrained(tiny4_path, config="paper", image_fetcher=fetcher)
    by_url = with_fetcher.rerank("a query", [Candidate(images=[url])])
    direct = with_fetcher.rerank("a query", [Candidate(images=[images[0]])])
    assert fetched == [url]
    assert by_url[0].score == pytest.approx(direct[0].score, abs=1e-6)


def test_decompression_bomb_is_refused_without_decoding(paper):
    import tracemalloc

    bomb = huge_png_header(20000, 20000)
    tracemalloc.start()
    try:
        error = _bad_candidate_error(paper, Candidate(images=[bomb]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(error.cause, ImageLoadError)
    assert peak < 100 * 2**20, f"peak {peak} bytes: the image was decoded"


def test_one_pixel_image_is_scaled_up_and_scored(paper):
    results = paper.rerank("a query", [Candidate(images=[Image.new("RGB", (1, 1), "red")])])
    assert len(results) == 1 and 0.0 < results[0].score < 1.0


def test_empty_query_without_image(paper):
    for query in ["", "   ", Query(text=None)]:
        with pytest.raises(InputError, match="query"):
            paper.rerank(query, ["a"])


def test_empty_candidate_list_returns_empty(paper):
    assert paper.rerank("a query", []) == []
    assert paper.score([]) == []


def test_top_n_larger_than_the_list_returns_all(paper):
    results = paper.rerank("a query", ["a", "b", "c"], top_n=10)
    assert sorted(r.index for r in results) == [0, 1, 2]
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)
    assert len(paper.rerank("a query", ["a", "b", "c"], top_n=2)) == 2
    with pytest.raises(InputError):
        paper.rerank("a query", ["a"], top_n=-1)


def test_skip_leaves_bad_candidates_out_and_reports_them(paper, images, tmp_path):
    candidates = [
        Candidate(images=[images[0]], id="a"),
        Candidate(images=[str(tmp_path / "missing.png")], id="b"),
        Candidate(text="", id="c"),
        Candidate(text="fine", id="d"),
    ]
    results = paper.rerank("a query", candidates, on_error="skip")
    assert sorted(r.id for r in results) == ["a", "d"]
    assert [(s.index, s.id) for s in results.skipped] == [(1, "b"), (2, "c")]
    assert "missing.png" in results.skipped[0].error
    clean = paper.rerank("a query", [candidates[0], candidates[3]])
    assert {r.id: r.score for r in results} == pytest.approx({r.id: r.score for r in clean}, abs=1e-6)


def test_an_error_loses_nothing_already_cached(paper, images):
    good = [Candidate(images=[im]) for im in images]
    first = paper.score([("q", c) for c in good])
    with pytest.raises(CandidateError):
        paper.rerank("q", [*good, Candidate(images=[b"not an image"])])
    paper.counters.reset()
    again = paper.score([("q", c) for c in good])
    assert paper.counters.prefix_computations == 0
    assert again == pytest.approx(first, abs=1e-7)


def test_long_candidates_are_truncated_as_the_official_model_does(tiny4_path):
    reranker = MiniReranker.from_pretrained(tiny4_path, config="dense")
    tokenizer = reranker.backbone.tokenizer
    long_text = "The quick brown fox jumps. " * 3000
    segment, _ = reranker.segments(
        reranker.prepare(Query(text="fox"), "q"), reranker.prepare(Candidate(text=long_text), "d")
    )
    full = tokenizer(official_prompt("fox", [], long_text, []), add_special_tokens=False)["input_ids"]
    assert len(full) > MAX_LENGTH + 5
    assert len(segment.input_ids) == MAX_LENGTH + 5
    assert list(segment.input_ids[-5:]) == full[-5:]
    assert list(segment.input_ids[:100]) == full[:100]


def _official_truncation(ids, max_length, special):
    head, tail = ids[:-5], ids[-5:]
    if len(head) <= max_length:
        return ids
    budget = max_length - sum(t in special for t in head)
    kept = []
    for t in head:
        if t in special:
            kept.append(t)
        elif budget > 0:
            kept.append(t)
            budget -= 1
    return kept + tail


def test_truncated_scores_equal_the_stock_forward_on_truncated_ids(tiny4_path, images):
    reranker = MiniReranker.from_pretrained(tiny4_path, config=RerankConfig(format="query_first", max_length=120))
    backbone = reranker.backbone
    query, doc = Query(text="fox", images=[images[0]]), Candidate(text="The quick brown fox jumps. " * 40)
    full = backbone.tokenizer(official_prompt(query.text, query.images, doc.text, []), add_special_tokens=False)[
        "input_ids"
    ]
    special = set(backbone.tokenizer.all_special_ids)
    truncated = _official_truncation(full, 120, special)
    assert len(truncated) < len(full)
    assert truncated.count(backbone.image_token_id) == full.count(backbone.image_token_id)
    expected = stock_score(backbone, truncated, [images[0]])
    assert reranker.score([(query, doc)])[0] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("images", ["abc", "page.png", {"a.png": 1}, {"a.png"}, 5])
@pytest.mark.parametrize("kind", [Candidate, Query])
def test_images_must_be_a_list_not_a_string_split_into_characters(kind, images):
    with pytest.raises(InputError, match="images must be a list of image sources") as info:
        kind(images=images)
    if isinstance(images, str):
        assert repr(images) in str(info.value) and "images=[...]" in str(info.value)


def test_one_image_object_still_counts_as_a_list_of_one(images):
    assert Candidate(images=images[0]).images == (images[0],)
    assert Candidate(images=b"\x89PNG").images == (b"\x89PNG",)
    assert Candidate(images=(im for im in images)).images == tuple(images)  # any iterable of images
