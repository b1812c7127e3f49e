"""PDF pages as image sources: rendering, page naming, typed errors, and scoring through the engine."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from minirerank_integrations import (
    Candidate,
    CandidateError,
    ImageLoadError,
    InputError,
    MiniReranker,
    PdfPage,
    pdf_pages,
)
from minirerank_integrations.engine.images import describe_source, load_image
from minirerank_integrations.testing import write_pdf

COLOURS = [(220, 30, 30), (30, 30, 220), (30, 160, 40)]


@pytest.fixture(scope="module")
def pdf_path(tmp_path_factory) -> Path:
    """A three-page PDF (red, blue, green pages of 120x160 points) written by PIL's PDF writer."""
    pages = [Image.new("RGB", (120, 160), colour) for colour in COLOURS]
    return write_pdf(tmp_path_factory.mktemp("pdf") / "report.pdf", pages)


def _centre(image: Image.Image) -> tuple[int, int, int]:
    return image.getpixel((image.width // 2, image.height // 2))


def _close(colour: tuple[int, ...], expected: tuple[int, int, int]) -> bool:
    return max(abs(a - b) for a, b in zip(colour, expected)) <= 3


def test_each_naming_renders_its_page(pdf_path):
    assert _close(_centre(load_image(PdfPage(pdf_path, index=0))), COLOURS[0])
    assert _close(_centre(load_image(f"{pdf_path}#page=2")), COLOURS[1])
    assert _close(_centre(load_image(PdfPage(str(pdf_path), label="3"))), COLOURS[2])
    image = load_image(PdfPage(pdf_path, index=1, scale=1.5))
    assert image.mode == "RGB" and image.size == (180, 240)


def test_pdf_pages_lists_every_page(pdf_path):
    pages = pdf_pages(pdf_path, scale=1.0)
    assert pages == [PdfPage(pdf_path, index=i, scale=1.0) for i in range(3)]
    assert [_close(_centre(load_image(p)), c) for p, c in zip(pages, COLOURS)] == [True] * 3
    assert describe_source(pages[2]) == f"{pdf_path}#page=3"


def test_missing_page_names_the_page_and_the_count(pdf_path):
    with pytest.raises(ImageLoadError, match=r"report\.pdf#page=4: no such page, the PDF has 3 pages"):
        load_image(PdfPage(pdf_path, index=3))
    with pytest.raises(ImageLoadError, match=r"no page labelled 'iv'.*1, 2, 3"):
        load_image(PdfPage(pdf_path, label="iv"))
    with pytest.raises(ImageLoadError, match="count from 1"):
        load_image(f"{pdf_path}#page=0")


def test_bad_pdfs_are_typed_errors(tmp_path, pdf_path):
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 this is not really a PDF")
    with pytest.raises(ImageLoadError, match=r"broken\.pdf#page=1: not a readable PDF"):
        load_image(f"{broken}#page=1")
    with pytest.raises(ImageLoadError, match="not a readable PDF"):
        pdf_pages(broken)
    with pytest.raises(ImageLoadError, match=r"absent\.pdf#page=1: no such file"):
        load_image(PdfPage(tmp_path / "absent.pdf", index=0))
    with pytest.raises(ImageLoadError, match="a PDF holds pages"):
        load_image(str(pdf_path))  # a whole PDF is not one image
    with pytest.raises(ImageLoadError, match="more than the 1000 allowed"):
        load_image(PdfPage(pdf_path, index=0), max_source_pixels=1000)


def test_page_must_be_named_one_way():
    with pytest.raises(InputError, match="index or by label"):
        PdfPage("a.pdf")
    with pytest.raises(InputError, match="index or by label"):
        PdfPage("a.pdf", index=0, label="1")
    with pytest.raises(InputError, match="index must be an int >= 0"):
        PdfPage("a.pdf", index=-1)


def test_a_page_scores_as_its_rendering(tiny4_path, pdf_path):
    reranker = MiniReranker.from_pretrained(tiny4_path, config="paper")
    rendered = [load_image(PdfPage(pdf_path, index=i)) for i in range(3)]
    by_page = reranker.score([("a blue page", Candidate(images=[p])) for p in pdf_pages(pdf_path)])
    by_image = reranker.score([("a blue page", Candidate(images=[im])) for im in rendered])
    assert by_page == pytest.approx(by_image, abs=1e-6)
    assert len(set(round(s, 6) for s in by_page)) > 1  # the pages differ, so must their scores
    # The rendered pixels are the cache key: precaching the pages serves the images' prefixes.
    reranker.precache([Candidate(images=[p]) for p in pdf_pages(pdf_path)], progress=False)
    reranker.counters.reset()
    reranker.rerank("a blue page", [Candidate(images=[im]) for im in rendered])
    assert reranker.counters.prefix_computations == 0 and reranker.counters.prefix_hits == 3


def test_a_bad_page_is_named_by_candidate(tiny4_path, pdf_path):
    reranker = MiniReranker.from_pretrained(tiny4_path, config="paper")
    candidates = [
        Candidate(images=[PdfPage(pdf_path, index=0)], id="p1"),
        Candidate(images=[f"{pdf_path}#page=9"], id="p9"),
    ]
    with pytest.raises(CandidateError, match=r"candidate 1 \(id 'p9'\).*no such page") as caught:
        reranker.rerank("a red page", candidates)
    assert caught.value.index == 1
    results = reranker.rerank("a red page", candidates, on_error="skip")
    assert [r.id for r in results] == ["p1"] and results.skipped[0].id == "p9"


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((None,), {"index": 0}, "path must be a str or os.PathLike, got NoneType"),
        ((123,), {"index": 0}, "path must be a str or os.PathLike, got int"),
        (("",), {"index": 0}, "path is empty"),
        (("a.pdf",), {"index": 0, "scale": float("inf")}, "scale must be a finite number"),
        (("a.pdf",), {"index": 0, "scale": float("-inf")}, "scale must be a finite number"),
        (("a.pdf",), {"index": 0, "scale": float("nan")}, "scale must be a finite number"),
        (("a.pdf",), {"index": 0, "scale": 0}, "scale must be a finite number"),
        (("a.pdf",), {"index": 0, "scale": -2.0}, "scale must be a finite number"),
        (("a.pdf",), {"index": 0, "scale": 1e6}, "scale must be a finite number"),
        (("a.pdf",), {"index": 0, "scale": "2"}, "scale must be a number .*got str '2'"),
        (("a.pdf",), {"index": 0, "scale": None}, "scale must be a number"),
        (("a.pdf",), {"index": 0, "scale": True}, "scale must be a number"),
        (("a.pdf",), {"index": 1.0}, "index must be an int >= 0"),
        (("a.pdf",), {"index": "0"}, "index must be an int >= 0"),
        (("a.pdf",), {"index": True}, "index must be an int >= 0"),
        (("a.pdf",), {"label": 3}, "label must be a non-empty str"),
        (("a.pdf",), {"label": " "}, "label must be a non-empty str"),
    ],
)
def test_a_malformed_page_is_an_input_error_at_construction(args, kwargs, message):
    with pytest.raises(InputError, match=message):
        PdfPage(*args, **kwargs)


def test_scale_accepts_any_finite_real_in_bounds(pdf_path):
    import numpy as np

    assert PdfPage(pdf_path, index=0, scale=3).scale == 3.0
    page = PdfPage(pdf_path, index=0, scale=np.float32(1.5))
    assert type(page.scale) is float and load_image(page).size == (180, 240)


def test_a_page_that_cannot_be_rendered_is_one_skipped_candidate(tiny4_path, pdf_path, tmp_path):
    pypdf = pytest.importorskip("pypdf")  # a dependency of the LlamaIndex adapter's PDF reader
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(pdf_path))
    writer.encrypt(user_password="secret", algorithm="RC4-128")  # RC4 needs no crypto library
    encrypted = tmp_path / "locked.pdf"
    with open(encrypted, "wb") as handle:
        writer.write(handle)
    reranker = MiniReranker.from_pretrained(tiny4_path, config="paper")
    candidates = [
        Candidate(images=[PdfPage(pdf_path, index=0)], id="page"),
        Candidate(images=[PdfPage(encrypted, index=0)], id="locked"),
        Candidate(images=[PdfPage(pdf_path, index=0, scale=0.01)], id="under a pixel"),  # 1x2 pixels: fine
    ]
    report = reranker.precache(candidates, on_error="skip", progress=False)
    assert [(o.id, o.status) for o in report] == [
        ("page", "stored"),
        ("locked", "skipped"),
        ("under a pixel", "stored"),
    ]
    assert "password" in report[1].reason.lower()
    results = reranker.rerank("a red page", candidates, on_error="skip")
    assert sorted(r.id for r in results) == ["page", "under a pixel"]
    assert [s.id for s in results.skipped] == ["locked"] and "password" in results.skipped[0].error.lower()


@pytest.mark.parametrize(("path", "scale"), [(None, 2.0), (123, 2.0), ("x.pdf", "2"), ("x.pdf", float("inf"))])
def test_pdf_pages_checks_its_arguments_before_opening(path, scale):
    with pytest.raises(InputError):
        pdf_pages(path, scale=scale)
