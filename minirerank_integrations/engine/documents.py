"""Document lists to candidates: image, PDF and text files, folders of them, and JSONL. The one reader of
documents: ``minirerank precache`` (:mod:`..scale`) and ``minirerank adapt --documents``
(:mod:`..quality.data.retrieved`) both read through it.

A JSONL line is one document, in one of these shapes (told apart by their fields):

* this project's: ``{"id": ..., "text": ..., "image": PATH_OR_BASE64}`` or ``"images": [...]``;
* a framework's dump, read by that framework's adapter package (registered under the
  ``minirerank.document_dumps`` entry point group) into exactly the candidate its adapter scores: a
  LlamaIndex node (``node.to_dict()``, by ``llama-index-postprocessor-minirerank``) or a LangChain
  ``Document`` (``doc.model_dump()`` or ``dumpd(doc)``, by ``langchain-minirerank``). A PDF loader's page is
  then its rendered page, as the adapters score it, not its extracted text.

Which file is an image is :func:`~.images.is_image_file` (one rule for every reader). A PDF file is one
document per page, each page named ``FILE#page=N`` (from 1), which the engine renders with pypdfium2 (the
``pdf`` extra): a string, so it travels to Ray workers by value.

Relative image (and PDF) paths are read from the JSONL file's folder. A document's id is its own id when it
has one, else ``FILE:LINE`` (JSONL) or the file's path.

A document file that cannot be read (a PDF that is encrypted or broken, a text file that is not UTF-8, a
FIFO or device under a document's name) is one bad document: :func:`read_corpus` keeps its place as an
:class:`UnreadableDocument` with the reason, so a run can store the rest and report it. A malformed JSONL
line, a missing path or an unknown file type is a mistake in the list itself and raises :class:`InputError`.
A text or JSONL file larger than ``max_file_bytes`` (:data:`MAX_DOCUMENT_FILE_BYTES` by default) is such a bad
document too, its error naming the file and the cap.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
import os
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

from ..errors import ConfigError, InputError, MiniRerankError
from .images import IMAGE_SUFFIXES, is_image_file
from .inputs import Candidate, PdfPage
from .pdf import pdf_pages

__all__ = [
    "copied_metadata",
    "DUMP_READERS_GROUP",
    "DumpReader",
    "JSONL_SUFFIXES",
    "MAX_DOCUMENT_FILE_BYTES",
    "PDF_SUFFIXES",
    "TEXT_SUFFIXES",
    "UnreadableDocument",
    "dump_readers",
    "read_corpus",
    "read_documents",
]

logger = logging.getLogger(__name__)

TEXT_SUFFIXES = frozenset({".txt", ".md"})
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
PDF_SUFFIXES = frozenset({".pdf"})

#: Largest text or JSONL document file read (bytes), as for an image file (``sources.MAX_FILE_BYTES``): a
#: JSONL list this size already holds millions of documents, and the cap keeps a wrong path (a disk image, a
#: log that grows while it is read) from filling memory. ``read_corpus(max_file_bytes=...)`` changes it.
MAX_DOCUMENT_FILE_BYTES = 256 * 2**20

#: The entry point group under which an adapter package registers the module that reads its framework's dumps.
DUMP_READERS_GROUP = "minirerank.document_dumps"


class DumpReader(Protocol):
    """What an adapter registers under :data:`DUMP_READERS_GROUP`: a module with these two functions."""

    is_dump: Callable[[Mapping[str, Any]], bool]  # whether a JSONL object is this framework's dump
    candidate_from_dump: Callable[[Mapping[str, Any], str], Candidate]  # the candidate its adapter scores


@dataclass(frozen=True)
class UnreadableDocument:
    """A document file that could not be read into a candidate, in its place in the list."""

    id: str  # the file's path, as a readable document's id would be
    error: MiniRerankError  # why, naming the file


def read_corpus(
    paths: Iterable[str | os.PathLike[str]],
    *,
    require_ids: bool = False,
    max_file_bytes: int = MAX_DOCUMENT_FILE_BYTES,
) -> list[Candidate | UnreadableDocument]:
    """The documents that ``paths`` hold, in order; a folder contributes its files sorted by path.

    A document file that cannot be read (or a text or JSONL file over ``max_file_bytes`` bytes) is an
    :class:`UnreadableDocument` in its place. Raises :class:`InputError` naming the path (and line) for a
    missing path, an unknown file type or a JSONL line that is not a document, or (``require_ids``) a JSONL
    document without an id of its own; :class:`ConfigError` for a ``max_file_bytes`` below 1.
    """
    if isinstance(max_file_bytes, bool) or not isinstance(max_file_bytes, int) or max_file_bytes < 1:
        raise ConfigError(f"max_file_bytes must be a positive number of bytes, got {max_file_bytes!r}")
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
                documents.extend(_read_file(file, require_ids, max_file_bytes))
        elif path.exists() or path.is_symlink():
            documents.extend(_read_file(path, require_ids, max_file_bytes))
        else:
            raise InputError(f"{path}: no such file or folder")
    return documents


def read_documents(
    paths: Iterable[str | os.PathLike[str]],
    *,
    require_ids: bool = False,
    max_file_bytes: int = MAX_DOCUMENT_FILE_BYTES,
) -> list[Candidate]:
    """The documents that ``paths`` hold, in order; a folder contributes its files sorted by path.

    Raises :class:`InputError` naming the path (and line) for a missing path, an unknown file type or
    a JSONL line that is not a document (or, ``require_ids``, has no id of its own), and the reading error of
    the first document file that cannot be read (:func:`read_corpus` keeps going instead).
    """
    documents = []
    for document in read_corpus(paths, require_ids=require_ids, max_file_bytes=max_file_bytes):
        if isinstance(document, UnreadableDocument):
            raise document.error
        documents.append(document)
    return documents


@functools.cache
def dump_readers() -> tuple[DumpReader, ...]:
    """The installed adapters' dump readers (entry point group :data:`DUMP_READERS_GROUP`), loaded once."""
    readers = []
    for point in sorted(entry_points(group=DUMP_READERS_GROUP), key=lambda p: p.name):
        try:
            readers.append(point.load())
        except Exception as error:  # a broken adapter install must not stop reading this project's records
            logger.warning("cannot load the %s document dump reader (%s): %s", point.name, point.value, error)
    return tuple(readers)


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if is_image_file(path):
        return "image"
    if suffix in TEXT_SUFFIXES:
        return "text"
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in PDF_SUFFIXES:
        return "pdf"
    return None


def _read_file(path: Path, require_ids: bool, max_file_bytes: int) -> list[Candidate | UnreadableDocument]:
    kind = _kind(path)
    if kind is None:
        known = ", ".join(sorted({*IMAGE_SUFFIXES, *TEXT_SUFFIXES, *JSONL_SUFFIXES, *PDF_SUFFIXES}))
        raise InputError(f"{path}: unknown document file type {path.suffix!r}; use one of {known}")
    if kind == "image":  # read when it is scored, where a bad image is that candidate's error
        return [Candidate(images=[str(path)], id=str(path))]
    try:
        size = _check_regular(path)
        if kind in ("text", "jsonl") and size > max_file_bytes:  # refused before a byte is read
            raise _too_large(path, max_file_bytes, f"{size} bytes")
        if kind == "text":
            return [Candidate(text=_text(path, max_file_bytes), id=str(path))]
        if kind == "jsonl":
            return list(_read_jsonl(path, require_ids, max_file_bytes))
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


def _check_regular(path: Path) -> int:
    """The size of ``path`` in bytes, once it is known to be a regular file."""
    try:
        status = path.stat()
    except OSError as error:
        raise _Unreadable(f"{path}: cannot read the file: {error}") from error
    if not stat.S_ISREG(status.st_mode):
        # Reading a FIFO blocks and a device (a link to /dev/zero, say) never ends.
        raise _Unreadable(f"{path}: not a regular file")
    return status.st_size


def _too_large(path: Path, max_file_bytes: int, size: str) -> _Unreadable:
    return _Unreadable(
        f"{path}: {size}, over the {max_file_bytes}-byte cap on a text or JSONL document file; split it, or raise "
        "the cap (read_corpus's max_file_bytes, minirerank precache --max-file-bytes)"
    )


def _text(path: Path, max_file_bytes: int) -> str:
    try:
        with path.open("rb") as file:
            data = file.read(max_file_bytes + 1)  # bounded: the file may have grown since it was measured
    except OSError as error:
        raise _Unreadable(f"{path}: cannot read the file: {error}") from error
    if len(data) > max_file_bytes:
        raise _too_large(path, max_file_bytes, "grew while it was read")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _Unreadable(
            f"{path}: not UTF-8 text ({error.reason} at byte {error.start}); convert it, e.g. with iconv"
        ) from error


def _read_jsonl(path: Path, require_ids: bool, max_file_bytes: int) -> list[Candidate]:
    documents = []
    read = 0
    try:
        with path.open("rb") as lines:
            for number, raw in enumerate(lines, start=1):
                read += len(raw)
                if read > max_file_bytes:  # the file grew since it was measured
                    raise _too_large(path, max_file_bytes, "grew while it was read")
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
                document = _document(record, path.parent, where)
                if require_ids and document.id == where:
                    raise InputError(f"{where}: the document has no id; give each document a unique id")
                documents.append(document)
    except OSError as error:
        raise _Unreadable(f"{path}: cannot read the file: {error}") from error
    return documents


def _document(record: dict[str, Any], folder: Path, where: str) -> Candidate:
    for reader in dump_readers():
        if reader.is_dump(record):
            candidate = reader.candidate_from_dump(record, where)
            if candidate.is_empty:
                raise InputError(f"{where}: the document has neither text nor images")
            resolved = tuple(_resolved(image, folder) for image in candidate.images)
            return dataclasses.replace(candidate, images=resolved, id=where if candidate.id is None else candidate.id)
    text, images, doc_id = _ours(record, where)
    if not all(isinstance(image, str) and image for image in images):
        shown = ", ".join(sorted({type(image).__name__ for image in images if not isinstance(image, str)})) or "str"
        raise InputError(f"{where}: images must be non-empty strings (paths or base64), got {shown}")
    if text is not None and not isinstance(text, str):
        raise InputError(f"{where}: text must be a string, got {type(text).__name__}")
    if doc_id is not None and (isinstance(doc_id, bool) or not isinstance(doc_id, (str, int))):
        raise InputError(f"{where}: id must be a string or an integer, got {type(doc_id).__name__}")
    listed = [_resolved(image, folder) for image in images]
    if not (text and text.strip()) and not listed:
        raise InputError(f"{where}: the document has neither text nor images")
    return Candidate(text=text or None, images=listed, id=str(doc_id) if doc_id is not None else where)


def _ours(record: dict[str, Any], where: str) -> tuple[Any, list[Any], Any]:
    unknown = set(record) - {"id", "text", "image", "images", "metadata"}
    if unknown:
        raise InputError(
            f"{where}: unknown fields {sorted(unknown)}; expected id, text, image or images (LlamaIndex and "
            "LangChain dumps are read by their adapter packages, when installed: llama-index-postprocessor-"
            "minirerank, langchain-minirerank)"
        )
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


def _resolved(image: Any, folder: Path) -> Any:
    """A relative image or PDF path is read from the JSONL file's folder; base64, URIs, absolute paths and
    in-memory images stay as they are. Paths become strings, which travel to Ray workers by value."""
    if isinstance(image, PdfPage):
        path = Path(image.path)
        return image if path.is_absolute() else dataclasses.replace(image, path=str(folder / path))
    if isinstance(image, os.PathLike):
        path = Path(image)
        return str(path if path.is_absolute() else folder / path)
    if isinstance(image, str) and len(image) < 4096 and not image.startswith("data:") and is_image_file(image):
        path = Path(image)
        return str(path if path.is_absolute() else folder / path)
    return image


def copied_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``metadata`` for a returned copy, so that changing it never changes the caller's.

    A value that cannot be deep-copied (a lock, an open file, a client) does not fail the call: within
    dicts, lists and tuples each such value is kept as the same object (what a shallow copy would do),
    and everything around it is still copied.
    """
    return {key: _copied(value, set()) for key, value in metadata.items()}


def _copied(value: Any, path: set[int]) -> Any:
    try:
        # A fresh memo each time: a failed deepcopy leaves half-filled containers in its memo.
        return copy.deepcopy(value)
    except Exception:  # anything a __deepcopy__ or __reduce__ may raise: TypeError, pickling errors, ...
        pass
    if id(value) in path:  # a container that holds itself: keep the cycle's own object
        return value
    if isinstance(value, (dict, list, tuple)):
        path.add(id(value))
        try:
            if isinstance(value, dict):
                return {key: _copied(item, path) for key, item in value.items()}
            items = [_copied(item, path) for item in value]
            return items if isinstance(value, list) else tuple(items)
        finally:
            path.discard(id(value))
    return value
