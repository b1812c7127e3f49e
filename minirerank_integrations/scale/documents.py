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
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..engine.inputs import Candidate
from ..engine.pdf import pdf_pages
from ..errors import InputError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
TEXT_SUFFIXES = frozenset({".txt", ".md"})
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
PDF_SUFFIXES = frozenset({".pdf"})


def read_documents(paths: Iterable[str | os.PathLike[str]]) -> list[Candidate]:
    """The documents that ``paths`` hold, in order; a folder contributes its files sorted by path.

    Raises :class:`InputError` naming the path (and line) for a missing path, an unknown file type or
    a JSONL line that is not a document.
    """
    documents: list[Candidate] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and _kind(p) is not None)
            if not files:
                raise InputError(f"{path}: the folder holds no image, text, PDF or JSONL files")
            for file in files:
                documents.extend(_read_file(file))
        elif path.is_file():
            documents.extend(_read_file(path))
        else:
            raise InputError(f"{path}: no such file or folder")
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


def _read_file(path: Path) -> list[Candidate]:
    kind = _kind(path)
    if kind == "image":
        return [Candidate(images=[str(path)], id=str(path))]
    if kind == "text":
        return [Candidate(text=path.read_text(encoding="utf-8"), id=str(path))]
    if kind == "jsonl":
        return _read_jsonl(path)
    if kind == "pdf":
        pages = len(pdf_pages(path))  # ImageLoadError (a MiniRerankError) names a bad or unreadable PDF
        return [Candidate(images=[f"{path}#page={n}"], id=f"{path}#page={n}") for n in range(1, pages + 1)]
    known = ", ".join(sorted(IMAGE_SUFFIXES | TEXT_SUFFIXES | JSONL_SUFFIXES | PDF_SUFFIXES))
    raise InputError(f"{path}: unknown document file type {path.suffix!r}; use one of {known}")


def _read_jsonl(path: Path) -> list[Candidate]:
    documents = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except ValueError as error:
                raise InputError(f"{where}: not a JSON object ({error})") from error
            if not isinstance(record, dict):
                raise InputError(f"{where}: a document must be a JSON object, got {type(record).__name__}")
            documents.append(_document(record, path.parent, where))
    return documents


def _document(record: dict[str, Any], folder: Path, where: str) -> Candidate:
    if record.get("lc") == 1 and isinstance(record.get("kwargs"), dict):  # langchain_core.load.dumpd
        record = {**record["kwargs"], "id": record["kwargs"].get("id")}
    if "page_content" in record:
        text, images, doc_id = _langchain(record)
    elif "id_" in record or "class_name" in record or "text_resource" in record:
        text, images, doc_id = _llama_index(record)
    else:
        text, images, doc_id = _ours(record, where)
    if not all(isinstance(image, str) and image for image in images):
        raise InputError(f"{where}: images must be non-empty strings (paths or base64)")
    if text is not None and not isinstance(text, str):
        raise InputError(f"{where}: text must be a string, got {type(text).__name__}")
    resolved = [_resolve(image, folder) for image in images]
    if not (text and text.strip()) and not resolved:
        raise InputError(f"{where}: the document has neither text nor images")
    return Candidate(text=text or None, images=resolved, id=str(doc_id) if doc_id is not None else where)


def _ours(record: dict[str, Any], where: str) -> tuple[Any, list[Any], Any]:
    unknown = set(record) - {"id", "text", "image", "images", "metadata"}
    if unknown:
        raise InputError(f"{where}: unknown fields {sorted(unknown)}; expected id, text, image or images")
    images = list(record.get("images") or [])
    if record.get("image"):
        images.insert(0, record["image"])
    return record.get("text"), images, record.get("id")


def _llama_index(record: dict[str, Any]) -> tuple[Any, list[Any], Any]:
    text = record.get("text")
    if text is None and isinstance(record.get("text_resource"), dict):
        text = record["text_resource"].get("text")
    images: list[Any] = []
    resource = record.get("image_resource")
    if isinstance(resource, dict):
        images.extend(v for v in (resource.get("path"), resource.get("data")) if v)
    images.extend(v for v in (record.get("image_path"), record.get("image")) if v)
    file_path = (record.get("metadata") or {}).get("file_path")
    if not images and isinstance(file_path, str) and Path(file_path).suffix.lower() in IMAGE_SUFFIXES:
        images.append(file_path)
    return text, images[:1] if images else [], record.get("id_")


def _langchain(record: dict[str, Any]) -> tuple[Any, list[Any], Any]:
    metadata = record.get("metadata") or {}
    images: list[Any] = []
    for key in ("image_path", "image_base64"):
        value = metadata.get(key)
        images.extend(value if isinstance(value, list) else [value] if value else [])
    return record.get("page_content"), images, record.get("id") or metadata.get("id")


def _resolve(image: str, folder: Path) -> str:
    """A relative path is read from the JSONL file's folder; base64 and absolute paths stay as they are."""
    if len(image) < 4096 and not image.startswith("data:") and Path(image).suffix.lower() in IMAGE_SUFFIXES:
        path = Path(image)
        return str(path if path.is_absolute() else folder / path)
    return image
