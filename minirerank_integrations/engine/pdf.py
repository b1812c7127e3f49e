"""PDF pages as images: a :class:`~.inputs.PdfPage` (or ``"file.pdf#page=N"``) rendered with pypdfium2.

Visual-document rerankers score the page as a picture, so a PDF is a list of page images. Rendering
needs the ``pdf`` extra (``pip install "minirerank-integrations[pdf]"``); every failure (no extra, no
file, not a PDF, no such page, a page too large) raises :class:`~minirerank_integrations.errors.ImageLoadError`
naming the page, so a bad page is reported like any unreadable image.
"""

from __future__ import annotations

import os
import re
import stat
import threading
from pathlib import Path

from PIL import Image

from ..errors import ImageLoadError
from .inputs import PdfPage

__all__ = ["PdfPage", "parse_page_reference", "pdf_pages", "render_page"]

# "report.pdf#page=3": the PDF open-parameter syntax (RFC 8118, section 3), pages counted from 1.
_PAGE_REFERENCE = re.compile(r"^(?P<path>.+\.pdf)#page=(?P<number>\d+)$", re.IGNORECASE)

# PDFium is not thread-safe (pypdfium2's documentation says so); the engine serializes its own calls,
# but pdf_pages and renders from several rerankers in one process share this library.
_PDFIUM_LOCK = threading.Lock()

_INSTALL_HINT = 'rendering PDF pages needs pypdfium2: pip install "minirerank-integrations[pdf]"'


def parse_page_reference(text: str) -> PdfPage | None:
    """The page a ``"file.pdf#page=N"`` string names (N counted from 1), or None for any other string.

    Raises:
        ImageLoadError: the string has the form but N is 0.
    """
    match = _PAGE_REFERENCE.match(text.strip())
    if match is None:
        return None
    number = int(match["number"])
    if number < 1:
        raise ImageLoadError(f"{text.strip()}: pages count from 1 in '#page=N', got {number}")
    return PdfPage(match["path"], index=number - 1)


def pdf_pages(path: str | os.PathLike, *, scale: float = 2.0) -> list[PdfPage]:
    """Every page of the PDF at ``path``, in order, as :class:`PdfPage` sources.

    Raises:
        InputError: ``path`` or ``scale`` is malformed (as :class:`PdfPage` checks them).
        ImageLoadError: pypdfium2 is missing, or ``path`` is not a readable PDF.
    """
    first = PdfPage(path, index=0, scale=scale)  # checks the path and scale before the file is opened
    with _PDFIUM_LOCK:
        document = _open(path, os.fsdecode(os.fspath(first.path)))
        try:
            count = len(document)
        finally:
            document.close()
    return [PdfPage(path, index=i, scale=scale) for i in range(count)]


def render_page(page: PdfPage, *, max_source_pixels: int) -> Image.Image:
    """The page rendered as an RGB image at ``page.scale`` pixels per point.

    Raises:
        ImageLoadError: pypdfium2 is missing, the file is absent or not a PDF, the page does not exist,
            or the rendering would exceed ``max_source_pixels`` (checked before rendering).
    """
    desc = str(page)
    with _PDFIUM_LOCK:
        document = _open(page.path, desc)
        try:
            index = _page_index(document, page, desc)
            pdf_page = document[index]
            try:
                width_pt, height_pt = pdf_page.get_size()
                width, height = round(width_pt * page.scale), round(height_pt * page.scale)
                if width < 1 or height < 1:
                    raise ImageLoadError(
                        f"{desc}: rendering at scale {page.scale} gives {width}x{height} pixels; pass a larger "
                        "PdfPage(scale=...)"
                    )
                if width * height > max_source_pixels:
                    raise ImageLoadError(
                        f"{desc}: rendering at scale {page.scale} gives {width}x{height} = {width * height} pixels, "
                        f"more than the {max_source_pixels} allowed; pass a smaller PdfPage(scale=...)"
                    )
                image = _render(pdf_page, page.scale, desc)
            finally:
                pdf_page.close()
        finally:
            document.close()
    return image.convert("RGB")


# --- internals -------------------------------------------------------------------------------------------


def _open(path: str | os.PathLike, desc: str):
    try:
        import pypdfium2
    except ImportError as exc:
        raise ImageLoadError(f"{desc}: {_INSTALL_HINT}") from exc
    file = Path(os.fspath(path))
    try:
        mode = file.stat().st_mode
    except FileNotFoundError as exc:
        raise ImageLoadError(f"{desc}: no such file") from exc
    except (OSError, ValueError) as exc:
        raise ImageLoadError(f"{desc}: cannot read the file: {exc}") from exc
    if not stat.S_ISREG(mode):
        # PDFium would block on a FIFO and read a device without end.
        raise ImageLoadError(f"{desc}: not a regular file; only PDF files are read")
    try:
        return pypdfium2.PdfDocument(file)
    except (pypdfium2.PdfiumError, OSError, ValueError) as exc:
        # An encrypted PDF says so here ("Incorrect password error"): it is one bad document, not a crash.
        raise ImageLoadError(f"{desc}: not a readable PDF: {exc}") from exc


def _render(pdf_page, scale: float, desc: str) -> Image.Image:
    import pypdfium2

    try:
        return pdf_page.render(scale=scale).to_pil()
    except (pypdfium2.PdfiumError, OSError, ValueError, MemoryError) as exc:
        raise ImageLoadError(f"{desc}: the page could not be rendered: {exc}") from exc


def _page_index(document, page: PdfPage, desc: str) -> int:
    count = len(document)
    if page.index is not None:
        if page.index >= count:
            raise ImageLoadError(
                f"{desc}: no such page, the PDF has {count} page{'s' if count != 1 else ''} "
                f"(PdfPage.index counts from 0, '#page=N' from 1)"
            )
        return page.index
    # A PDF without declared labels reports "" for every page; readers (pypdf, hence LlamaIndex's
    # PDFReader) then label pages by their number counted from 1, and so do we.
    labels = [document.get_page_label(i) or str(i + 1) for i in range(count)]
    if page.label in labels:
        return labels.index(page.label)
    shown = ", ".join(labels[:8]) + (", ..." if count > 8 else "")
    raise ImageLoadError(f"{desc}: no page labelled {page.label!r} (the PDF's labels: {shown})")
