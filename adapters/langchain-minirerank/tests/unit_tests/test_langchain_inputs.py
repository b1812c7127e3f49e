"""Recognising images in page_content, metadata and queries, before any model is involved."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from langchain_core.documents import Document
from minirerank_integrations import Query
from minirerank_integrations.engine.images import has_image_header, is_image_string
from PIL import Image

from langchain_minirerank._inputs import (
    ImageKeys,
    candidate_from_document,
    query_from_text,
)

KEYS = ImageKeys(paths=("image_path",), base64=("image_base64",), urls=(), mime_type="mime_type")


def encoded(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"])
def test_base64_of_each_image_format_is_an_image(fmt: str) -> None:
    data = encoded(fmt)
    assert has_image_header(data)
    assert is_image_string(base64.b64encode(data).decode())


def test_base64_wrapped_at_76_columns_is_an_image() -> None:
    text = base64.encodebytes(encoded("PNG")).decode()  # inserts a newline every 76 characters
    assert "\n" in text.strip()
    assert is_image_string(text)


@pytest.mark.parametrize(
    "text",
    [
        "A plain sentence about a red circle, long enough to be decoded if it were base64 text.",
        base64.b64encode(b"this is base64, but of text and not of an image at all").decode(),
        base64.b64encode(b"BM" + b"\x00" * 40).decode(),  # 'BM' without a BMP info header
        "iVBORw0KGgo",  # a PNG header too short to be an image
        "",
    ],
)
def test_text_and_non_image_base64_are_text(text: str) -> None:
    assert not is_image_string(text)


def test_query_strings() -> None:
    b64 = base64.b64encode(encoded("PNG")).decode()
    assert query_from_text("red circle", image_paths=False) == "red circle"
    assert query_from_text(b64, image_paths=False) == Query(images=(b64,))
    uri = f"data:image/png;base64,{b64}"
    assert query_from_text(uri, image_paths=False) == Query(images=(uri,))


def test_query_path_needs_the_option_and_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "q.png"
    path.write_bytes(encoded("PNG"))
    assert query_from_text(str(path), image_paths=False) == str(path)
    assert query_from_text(str(path), image_paths=True) == Query(images=(path,))
    missing = str(tmp_path / "missing.png")
    assert query_from_text(missing, image_paths=True) == missing


def test_document_shapes(tmp_path: Path) -> None:
    b64 = base64.b64encode(encoded("PNG")).decode()
    image_doc = candidate_from_document(Document(page_content=b64, id="a"), KEYS)
    assert (image_doc.text, image_doc.images, image_doc.id) == (None, (b64,), "a")

    text_doc = candidate_from_document(Document(page_content="hello"), KEYS)
    assert (text_doc.text, text_doc.images) == ("hello", ())

    paths = [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    captioned = candidate_from_document(Document(page_content="caption", metadata={"image_path": paths}), KEYS)
    assert (captioned.text, captioned.images) == ("caption", tuple(Path(p) for p in paths))

    typed = candidate_from_document(
        Document(page_content=" ", metadata={"image_base64": b64, "mime_type": "image/png"}), KEYS
    )
    assert (typed.text, typed.images) == (None, (f"data:image/png;base64,{b64}",))


def test_image_mime_type_declares_page_content_an_image() -> None:
    damaged = "not really an image"
    declared = candidate_from_document(Document(page_content=damaged, metadata={"mime_type": "image/png"}), KEYS)
    assert (declared.text, declared.images) == (None, (damaged,))
    other = candidate_from_document(Document(page_content=damaged, metadata={"mime_type": "text/plain"}), KEYS)
    assert (other.text, other.images) == (damaged, ())


def test_url_keys_are_read_only_when_enabled() -> None:
    document = Document(page_content="caption", metadata={"image_url": "https://example.org/a.png"})
    assert candidate_from_document(document, KEYS).images == ()
    with_urls = ImageKeys(paths=(), base64=(), urls=("image_url",), mime_type=None)
    assert candidate_from_document(document, with_urls).images == ("https://example.org/a.png",)


def test_the_engine_rule_decides_which_page_content_is_an_image() -> None:
    data = encoded("PNG") * 3  # long enough for the damaged-image rule too
    plain = base64.b64encode(data).decode()
    for text in (
        str(base64.b64encode(data)),  # "b'iVBOR...'"
        base64.urlsafe_b64encode(data).decode(),
        plain[:6] + "!" + plain[7:],  # damaged near the start
        "data:image/png;base64,not really",
    ):
        candidate = candidate_from_document(Document(page_content=text), KEYS)
        assert candidate.images == (text,) and candidate.text is None, text
    prose = "A long passage of ordinary prose, " * 8
    assert candidate_from_document(Document(page_content=prose), KEYS).text == prose
