"""Document lists to candidates: image and text files, folders of them, and JSONL dumps.

A JSONL line is one document, in one of three shapes (told apart by their fields):

* this project's: ``{"id": ..., "text": ..., "image": PATH_OR_BASE64}`` or ``"images": [...]``;
* a LlamaIndex node (``node.to_dict()``): ``id_``, ``text`` (or ``text_resource.text``), and an image in
  ``image`` (base64), ``image_path``, ``image_resource`` (``path`` or ``data``) or an image file named by
  ``metadata["file_path"]``;
* a LangChain ``Document`` (``doc.model_dump()`` or ``dumpd(doc)``): ``page_content`` and ``metadata``,
  with images in ``metadata["image_path"]`` or ``metadata["image_base64"]``.

A PDF file is one document per page, each page named ``FILE#page=N`` (from 1), which the engine renders
with pypdfium2 (the ``pdf`` extra): a string, so it travels to Ray workers by value.

Relative image paths are read from the JSONL file's folder. A document's id is its own id when it has
one, else ``FILE:LINE`` (JSONL) or the file's path.

A document file that cannot be read (a PDF that is encrypted or broken, a text file that is not UTF-8, a
FIFO or device under a document's name) is one bad document: :func:`read_corpus` keeps its place as an
:class:`UnreadableDocument` with the reason, so a run can store the rest and report it. A malformed JSONL
line, a missing path or an unknown file type is a mistake in the list itself and raises :class:`InputError`.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engine.inputs import Candidate
from ..engine.pdf import pdf_pages
from ..errors import InputError, MiniRerankError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
TEXT_SUFFIXES = frozenset({".txt", ".md"})
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
PDF_SUFFIXES = frozenset({".pdf"})


@dataclass(frozen=True)
class UnreadableDocument:
    """A document file that could not be read into a candidate, in its place in the list."""

    id: str  # the file's path, as a readable document's id would be
    error: MiniRerankError  # why, naming the file


def read_corpus(paths: Iterable[str | os.PathLike[str]]) -> list[Candidate | UnreadableDocument]:
    """The documents that ``paths`` hold, in order; a folder contributes its files sorted by path.

    A document file that cannot be read is an :class:`UnreadableDocument` in its place. Raises
    :class:`InputError` naming the path (and line) for a missing path, an unknown file type or a JSONL
    line that is not a document.
    """
    documents: list[Candidate | UnreadableDocument] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            # Every entry of a known type is listed, regular or not: a FIFO named page.png is reported, not
            # silently passed over (symbolic links to folders are not followed).
            try:
                files = sorted(p for p in path.rglob("*") if _kind(p) is not None and not p.is_dir())
            except OSError as error:  # a folder inside that cannot be listed (permissions)
                raise InputError(f"{path}: cannot list the folder: {error}") from error
            if not files:
                raise InputError(f"{path}: the folder holds no image, text, PDF or JSONL files")
            for file in files:
                documents.extend(_read_file(file))
        elif path.exists() or path.is_symlink():
            documents.extend(_read_file(path))
        else:
            raise InputError(f"{path}: no such file or folder")
    return documents


def read_documents(paths: Iterable[str | os.PathLike[str]]) -> list[Candidate]:
    """The documents that ``paths`` hold, in order; a folder contributes its files sorted by path.

    Raises :class:`InputError` naming the path (and line) for a missing path, an unknown file type or
    a JSONL line that is not a document, and the reading error of the first document file that cannot be
    read (:func:`read_corpus` keeps going instead).
    """
    documents = []
    for document in read_corpus(paths):
        if isinstance(document, UnreadableDocument):
            raise document.error
        documents.append(document)
    return documents


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in TEXT_SUFFIXES:
        return "text"
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in PDF_SUFFIXES:
        return "pdf"
    return None


def _read_file(path: Path) -> list[Candidate | UnreadableDocument]:
    kind = _kind(path)
    if kind is None:
        known = ", ".join(sorted(IMAGE_SUFFIXES | TEXT_SUFFIXES | JSONL_SUFFIXES | PDF_SUFFIXES))
        raise InputError(f"{path}: unknown document file type {path.suffix!r}; use one of {known}")
    if kind == "image":  # read when it is scored, where a bad image is that candidate's error
        return [Candidate(images=[str(path)], id=str(path))]
    try:
        _check_regular(path)
        if kind == "text":
            return [Candidate(text=_text(path), id=str(path))]
        if kind == "jsonl":
            return list(_read_jsonl(path))
        pages = len(pdf_pages(path))  # ImageLoadError names an encrypted, broken or unreadable PDF
    except _Unreadable as error:
        return [UnreadableDocument(str(path), error)]
    except MiniRerankError as error:
        if kind == "jsonl":
            raise  # a malformed line is a mistake in the list, not one bad document
        return [UnreadableDocument(str(path), error)]
    return [Candidate(images=[f"{path}#page={n}"], id=f"{path}#page={n}") for n in range(1, pages + 1)]


class _Unreadable(InputError):
    """A document file that is there but cannot be read as one (JSONL files included)."""


def _check_regular(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError as error:
        raise _Unreadable(f"{path}: cannot read the file: {error}") from error
    if not stat.S_ISREG(mode):
        # Reading a FIFO blocks and a device (a link to /dev/zero, say) never ends.
        raise _Unreadable(f"{path}: not a regular file")


def _text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise _Unreadable(f"{path}: cannot read the file: {error}") from error
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _Unreadable(
            f"{path}: not UTF-8 text ({error.reason} at byte {error.start}); convert it, e.g. with iconv"
        ) from error


def _read_jsonl(path: Path) -> list[Candidate]:
    documents = []
    try:
        with path.open("rb") as lines:
            for number, raw in enumerate(lines, start=1):
                where = f"{path}:{number}"
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise InputError(f"{where}: not UTF-8 text ({error.reason} at byte {error.start})") from error
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except (ValueError, RecursionError) as error:  # RecursionError: nesting too deep
                    raise InputError(f"{where}: not a JSON object ({error})") from error
                if not isinstance(record, dict):
                    raise InputError(f"{where}: a document must be a JSON object, got {type(record).__name__}")
                documents.append(_document(record, path.parent, where))
    except OSError as error:
        raise _Unreadable(f"{path}: cannot read the file: {error}") from error
    return documents


def _document(record: dict[str, Any], folder: Path, where: str) -> Candidate:
    if record.get("lc") == 1 and isinstance(record.get("kwargs"), dict):  # langchain_core.load.dumpd
        record = {**record["kwargs"], "id": record["kwargs"].get("id")}
    if "page_content" in record:
        text, images, doc_id = _langchain(record, where)
    elif "id_" in record or "class_name" in record or "text_resource" in record:
        text, images, doc_id = _llama_index(record, where)
    else:
        text, images, doc_id = _ours(record, where)
    if not all(isinstance(image, str) and image for image in images):
        shown = ", ".join(sorted({type(image).__name__ for image in images if not isinstance(image, str)})) or "str"
        raise InputError(f"{where}: images must be non-empty strings (paths or base64), got {shown}")
    if text is not None and not isinstance(text, str):
        raise InputError(f"{where}: text must be a string, got {type(text).__name__}")
    if doc_id is not None and (isinstance(doc_id, bool) or not isinstance(doc_id, (str, int))):
        raise InputError(f"{where}: id must be a string or an integer, got {type(doc_id).__name__}")
    resolved = [_resolve(image, folder) for image in images]
    if not (text and text.strip()) and not resolved:
        raise InputError(f"{where}: the document has neither text nor images")
    return Candidate(text=text or None, images=resolved, id=str(doc_id) if doc_id is not None else where)


def _ours(record: dict[str, Any], where: str) -> tuple[Any, list[Any], Any]:
    unknown = set(record) - {"id", "text", "image", "images", "metadata"}
    if unknown:
        raise InputError(f"{where}: unknown fields {sorted(unknown)}; expected id, text, image or images")
    listed = record.get("images")
    if listed is not None and not isinstance(listed, list):
        # A string would otherwise be split into one-character "images".
        hint = '; one image goes in "image"' if isinstance(listed, str) else ""
        raise InputError(
            f'{where}: "images" must be a list of paths or base64 strings, got {type(listed).__name__}{hint}'
        )
    images = list(listed or [])
    if record.get("image") not in (None, ""):  # an empty "image" is no image, as before
        images.insert(0, record["image"])
    return record.get("text"), images, record.get("id")


def _llama_index(record: dict[str, Any], where: str) -> tuple[Any, list[Any], Any]:
    text = record.get("text")
    if text is None and isinstance(record.get("text_resource"), dict):
        text = record["text_resource"].get("text")
    images: list[Any] = []
    resource = record.get("image_resource")
    if isinstance(resource, dict):
        images.extend(v for v in (resource.get("path"), resource.get("data")) if v)
    images.extend(v for v in (record.get("image_path"), record.get("image")) if v)
    file_path = _metadata(record, where).get("file_path")
    if not images and isinstance(file_path, str) and Path(file_path).suffix.lower() in IMAGE_SUFFIXES:
        images.append(file_path)
    return text, images[:1] if images else [], record.get("id_")


def _langchain(record: dict[str, Any], where: str) -> tuple[Any, list[Any], Any]:
    metadata = _metadata(record, where)
    images: list[Any] = []
    for key in ("image_path", "image_base64"):
        value = metadata.get(key)
        images.extend(value if isinstance(value, list) else [value] if value else [])
    return record.get("page_content"), images, record.get("id") or metadata.get("id")


def _metadata(record: dict[str, Any], where: str) -> dict[str, Any]:
    metadata = record.get("metadata")
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InputError(f"{where}: metadata must be a JSON object, got {type(metadata).__name__}")
    return metadata


def _resolve(image: str, folder: Path) -> str:
    """A relative path is read from the JSONL file's folder; base64 and absolute paths stay as they are."""
    if len(image) < 4096 and not image.startswith("data:") and Path(image).suffix.lower() in IMAGE_SUFFIXES:
        path = Path(image)
        return str(path if path.is_absolute() else folder / path)
    return image
