"""Images keyed by their source (engine/image_keys.py): a seen candidate is not decoded again, a changed file
gets a new key and never the old prefix, a bad image is still its candidate's error at preparation."""

from __future__ import annotations

import base64
import io
import os
import time

import pytest
from pictures import drawn_image
from PIL import Image

from minirerank_integrations import MiniReranker, RerankConfig
from minirerank_integrations.engine import image_keys
from minirerank_integrations.engine.image_keys import clear_memo, key_image
from minirerank_integrations.engine.inputs import Candidate, PdfPage
from minirerank_integrations.errors import ImageLoadError
from minirerank_integrations.testing import write_pdf

A = RerankConfig(format="vision_first", exit_layer=4, band=(0, 4))
QUERY = "a red circle on the left"
OLD = 10**9 * 1_000_000_000  # 2001-09-09: a file stamp long settled


@pytest.fixture(autouse=True)
def _fresh_memo():
    clear_memo()


@pytest.fixture
def settled(monkeypatch):
    """Files count as settled (trusted by their stamp) 50 ms after their last change instead of 2 s."""
    monkeypatch.setattr(image_keys, "SETTLE_SECONDS", 0.05)
    return lambda: time.sleep(0.1)


@pytest.fixture
def engine(tiny4_path) -> MiniReranker:
    return MiniReranker.from_pretrained(tiny4_path, config=A)


def png(seed: int, size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    drawn_image(*size, seed=seed).save(buffer, format="PNG")
    return buffer.getvalue()


def bmp(seed: int) -> bytes:
    """Uncompressed: every 64x64 picture is the same number of bytes, so only the content tells them apart."""
    buffer = io.BytesIO()
    drawn_image(64, 64, seed=seed).save(buffer, format="BMP")
    return buffer.getvalue()


def write(path, data: bytes, mtime_ns: int | None = OLD) -> None:
    path.write_bytes(data)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def scores(results) -> list[float]:
    return [r.score for r in sorted(results, key=lambda r: r.index)]


def test_a_seen_file_is_not_decoded_again_and_scores_the_same(engine, tiny4_path, tmp_path, settled):
    path = tmp_path / "page.png"
    write(path, png(1, (96, 64)))
    settled()
    first = engine.prepare(Candidate(images=[str(path)]), "c").images[0]
    again = engine.prepare(Candidate(images=[str(path)]), "c").images[0]
    assert first.loaded and not again.loaded  # the second sight cost a stat, no decoding
    assert (again.digest, again.grid_thw) == (first.digest, first.grid_thw) == (first.digest, (1, 4, 6))
    assert again.image.tobytes() == first.image.tobytes()  # decoded on demand: the same pixels

    warm = scores(engine.rerank(QUERY, [Candidate(images=[str(path)]), Candidate(text="x")]))
    cold = MiniReranker.from_pretrained(tiny4_path, config=A)  # an empty store: the seen image is decoded lazily
    assert scores(cold.rerank(QUERY, [Candidate(images=[str(path)]), Candidate(text="x")])) == pytest.approx(
        warm, abs=1e-6
    )
    assert cold.counters.prefix_computations == 2


def test_a_file_its_bytes_base64_and_data_uri_share_one_key(tmp_path):
    data = png(2)
    path = tmp_path / "a.png"
    write(path, data)
    text = base64.b64encode(data).decode()
    uri = "data:image/png;base64," + text
    digests = {key_image(source).digest for source in (str(path), path, data, text, uri, f"b'{text}'")}
    assert len(digests) == 1  # a page pre-cached from its file is found when a framework sends it as base64
    assert key_image(text).image is None  # seen before: not decoded again
    assert key_image(base64.b64encode(png(3)).decode()).digest not in digests


@pytest.mark.parametrize("same_stamp", [True, False], ids=["mtime-restored", "plain-overwrite"])
def test_a_file_whose_bytes_change_gets_a_new_key_and_never_the_old_prefix(
    engine, tiny4_path, tmp_path, same_stamp, settled
):
    path = tmp_path / "page.bmp"
    write(path, bmp(10))
    settled()  # the stamp is trusted from here on: only a changed stamp can bring the new bytes in
    candidates = [Candidate(images=[str(path)])]
    old = scores(engine.rerank(QUERY, candidates))
    old_key = engine.document_prefix(engine.prepare(candidates[0], "c"))[0]

    # Same size in bytes when the stamp is restored: only the content (and ctime) changed.
    new_bytes = bmp(11)
    assert len(new_bytes) == len(bmp(10))
    write(path, new_bytes, OLD if same_stamp else None)
    hits = engine.counters.prefix_hits
    new = scores(engine.rerank(QUERY, candidates))
    assert engine.document_prefix(engine.prepare(candidates[0], "c"))[0] != old_key
    assert engine.counters.prefix_hits == hits
    expected = MiniReranker.from_pretrained(tiny4_path, config=A).rerank(QUERY, [Candidate(images=[new_bytes])])
    assert new == pytest.approx(scores(expected), abs=1e-6)
    assert new != pytest.approx(old, abs=1e-7)


def test_a_file_changed_after_keying_is_refused_when_its_pixels_are_needed(tmp_path, settled):
    path = tmp_path / "page.png"
    write(path, png(20))
    settled()
    key_image(str(path))  # first sight: decoded, stamp remembered
    seen = key_image(str(path))
    assert seen.image is None
    write(path, png(21), OLD)  # changed under the key: the pixels would not be the ones the key names
    with pytest.raises(ImageLoadError, match="page.png.*changed while it was in use"):
        seen.loader()


def test_a_corrupt_image_is_its_candidates_error_every_time(engine):
    data = png(30, (256, 256))
    broken = data[: len(data) // 2]  # the header parses, the pixels do not
    Image.open(io.BytesIO(broken))  # PIL reads the header without complaint
    candidates = [Candidate(images=[broken], id="bad"), Candidate(images=[data], id="good")]
    for _ in range(2):  # a failure is never remembered as a size
        results = engine.rerank(QUERY, candidates, on_error="skip")
        assert [s.index for s in results.skipped] == [0] and [r.id for r in results] == ["good"]
        assert "not a decodable image" in results.skipped[0].error


def test_a_recent_file_is_hashed_each_time_not_trusted_by_its_stamp(tmp_path):
    path = tmp_path / "fresh.png"
    write(path, png(40), mtime_ns=None)  # written just now: its stamp may not show the next write
    key_image(str(path))
    again = key_image(str(path))
    assert again.image is None  # still not decoded: its bytes were hashed and found in the memo
    stamp = os.stat(path).st_mtime_ns
    write(path, png(41), stamp)  # same mtime, other bytes
    assert key_image(str(path)).digest != again.digest


def test_pdf_pages_are_keyed_by_the_file_digest_and_rendered_only_on_a_miss(engine, tmp_path):
    pytest.importorskip("pypdfium2")
    pdf = write_pdf(tmp_path / "doc.pdf", [drawn_image(64, 64, 50), drawn_image(96, 64, 51)])
    os.utime(pdf, ns=(OLD, OLD))
    first = engine.prepare(Candidate(images=[PdfPage(pdf, index=1)]), "c").images[0]
    again = engine.prepare(Candidate(images=[f"{pdf}#page=2"]), "c").images[0]  # the same page, named otherwise
    assert first.loaded and not again.loaded and again.digest == first.digest
    assert again.image.tobytes() == first.image.tobytes()
    other_scale = engine.prepare(Candidate(images=[PdfPage(pdf, index=1, scale=1.0)]), "c").images[0]
    assert other_scale.digest != first.digest

    write_pdf(pdf, [drawn_image(64, 64, 50), drawn_image(96, 64, 52)])
    os.utime(pdf, ns=(OLD, OLD))
    changed = engine.prepare(Candidate(images=[PdfPage(pdf, index=1)]), "c").images[0]
    assert changed.loaded and changed.digest != first.digest


def test_a_pil_image_changed_between_calls_gets_a_new_key():
    image = drawn_image(64, 64, 60)
    digest = key_image(image).digest
    image.putpixel((0, 0), (1, 2, 3))
    assert key_image(image).digest != digest


def test_seen_image_work_is_a_stat_not_a_decode(tmp_path):
    """Not a timing: counts what a seen source costs by what the key returns (no pixels)."""
    path = tmp_path / "big.png"
    write(path, png(70, (512, 512)))
    start = time.perf_counter()
    assert key_image(str(path)).image is not None
    assert key_image(str(path)).image is None
    assert time.perf_counter() - start < 60  # bounded, not measured
