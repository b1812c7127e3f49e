"""LlamaIndex objects to engine inputs: nodes become ``Candidate``s, query bundles become ``Query``s.

The postprocessor and the ingestion step both convert through :func:`node_to_candidate`, so a document
pre-cached while it is ingested is exactly the candidate scored at query time (same text, same image and
video, hence the same prefix key in the engine's store).
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from typing import TypeVar

from llama_index.core.schema import BaseNode, ImageNode, MetadataMode, Node, QueryBundle
from minirerank_integrations import (
    Candidate,
    ImageFetcher,
    PdfPage,
    Query,
    VideoLoadError,
    fetch_image,
    fetch_source,
    is_image_file,
)

logger = logging.getLogger(__name__)


_HTTP_PREFIXES = ("http://", "https://")

_Source = TypeVar("_Source", bound="str | bytes")

#: File name extensions of video containers PyAV (FFmpeg) reads, for ``metadata["file_path"]`` without a type.
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".mpeg", ".mpg", ".ogv", ".3gp"})


def node_to_candidate(node: BaseNode, metadata_mode: MetadataMode, fetcher: ImageFetcher | None) -> Candidate:
    """The engine candidate for ``node``: its text (if it has any of its own), its image and its video (if any).

    Raises:
        ImageLoadError: ``fetcher`` failed on the node's image URL.
        VideoLoadError: ``fetcher`` failed on the node's video URL, or its ``video_resource`` data is not base64.
    """
    image = node_image(node)
    video = node_video(node)
    if image is None and video is None:
        page = node_pdf_page(node)
        if page is not None:  # the page is scored as it looks; its extracted text is a lossy copy of that
            return Candidate(images=(page,), id=node.node_id)
    text = node_text(node, metadata_mode)
    if text is not None:
        # The reader's record of where a file was is not the node's content: the text still scores.
        image = _unless_gone(node, image, _metadata_image(node), "image")
        video = _unless_gone(node, video, _metadata_video(node), "video")
    images = () if image is None else (_fetched(image, fetcher, f"node {node.node_id!r}"),)
    videos = () if video is None else (_fetched_video(video, fetcher, f"node {node.node_id!r}"),)
    return Candidate(text=text, images=images, id=node.node_id, videos=videos)


def query_to_engine(query_bundle: QueryBundle, fetcher: ImageFetcher | None) -> Query:
    """The engine query for ``query_bundle``: ``query_str`` and/or the image at ``image_path``.

    ``image_to_image_retrieve`` builds ``QueryBundle(query_str="", image_path=...)``: an image-only query.
    """
    text = query_bundle.query_str if query_bundle.query_str and query_bundle.query_str.strip() else None
    images = () if not query_bundle.image_path else (_fetched(query_bundle.image_path, fetcher, "the query"),)
    return Query(text=text, images=images)


def node_text(node: BaseNode, metadata_mode: MetadataMode) -> str | None:
    """The node's content rendered with ``metadata_mode``, or None when the node has no text of its own.

    Metadata alone is not content: an image node whose text is empty (the usual ``ImageNode``) is
    scored on its image only, and a text node with empty text has nothing to score.
    """
    if not node.get_content(metadata_mode=MetadataMode.NONE).strip():
        return None
    return node.get_content(metadata_mode=metadata_mode)


def node_image(node: BaseNode) -> str | None:
    """Where the node's image is, as an engine image source; the first of, in order:

    1. ``ImageNode``: ``image`` (base64, sent as a ``data:`` URI), ``image_path``, ``image_url``;
    2. ``Node``: ``image_resource`` ``data`` (base64), ``path``, ``url``;
    3. ``metadata["file_path"]`` when it names an image file (by extension or ``metadata["file_type"]``),
       as readers such as ``SimpleDirectoryReader`` record it.

    A node with none of these but a PDF page in its metadata is its page (see :func:`node_pdf_page`).
    """
    if isinstance(node, ImageNode):
        if node.image:
            return _data_uri(node.image, node.image_mimetype)
        if node.image_path:
            return node.image_path
        if node.image_url:
            return node.image_url
    if isinstance(node, Node) and node.image_resource is not None:
        resource = node.image_resource
        if resource.data:
            # MediaResource keeps its data base64-encoded (it encodes raw bytes on validation).
            return _data_uri(resource.data.decode("ascii", errors="replace"), resource.mimetype)
        if resource.path is not None:
            return str(resource.path)
        if resource.url is not None:
            return str(resource.url)
    return _metadata_image(node)


def _metadata_image(node: BaseNode) -> str | None:
    file_path = node.metadata.get("file_path")
    if isinstance(file_path, str) and is_image_file(file_path, node.metadata.get("file_type")):
        return file_path
    return None


def node_video(node: BaseNode) -> str | bytes | None:
    """Where the node's video is, as an engine video source; the first of, in order:

    1. ``Node``: ``video_resource`` ``data`` (base64, decoded to the file's bytes), ``path``, ``url``;
    2. ``metadata["file_path"]`` when it names a video file (by ``metadata["file_type"]`` ``video/*``, or by
       extension, :data:`VIDEO_EXTENSIONS`), as readers such as ``SimpleDirectoryReader`` record it.

    Raises:
        VideoLoadError: ``video_resource.data`` is not base64.
    """
    if isinstance(node, Node) and node.video_resource is not None:
        resource = node.video_resource
        if resource.data:
            # MediaResource keeps its data base64-encoded (it encodes raw bytes on validation).
            try:
                return base64.b64decode(resource.data, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise VideoLoadError(f"node {node.node_id!r}: its video_resource data is not base64: {exc}") from exc
        if resource.path is not None:
            return str(resource.path)
        if resource.url is not None:
            return str(resource.url)
    return _metadata_video(node)


def _metadata_video(node: BaseNode) -> str | None:
    file_path, file_type = node.metadata.get("file_path"), node.metadata.get("file_type")
    if not isinstance(file_path, str):
        return None
    if isinstance(file_type, str) and file_type:
        return file_path if file_type.lower().startswith("video/") else None
    return file_path if os.path.splitext(file_path)[1].lower() in VIDEO_EXTENSIONS else None


def _unless_gone(node: BaseNode, source: _Source | None, recorded: str | None, kind: str) -> _Source | None:
    """``source``, or None when it is the metadata's ``file_path`` record and that file no longer exists."""
    if source is None or recorded is None or source != recorded or os.path.exists(recorded):
        return source
    logger.warning(
        "node %r: its metadata file_path %s %r no longer exists; scoring the node on its text",
        node.node_id,
        kind,
        source,
    )
    return None


def node_pdf_page(node: BaseNode) -> PdfPage | None:
    """The PDF page a PDF reader's node comes from: ``metadata["file_path"]`` naming a PDF (by extension or
    ``file_type``) and ``metadata["page_label"]``, as ``SimpleDirectoryReader`` with ``PDFReader`` records
    them. The label is resolved against the PDF's own page labels (its page number from 1 when it has none).
    """
    file_path, label = node.metadata.get("file_path"), node.metadata.get("page_label")
    if not isinstance(file_path, str) or label is None or str(label).strip() == "":
        return None
    file_type = node.metadata.get("file_type")
    if file_type != "application/pdf" and not file_path.lower().endswith(".pdf"):
        return None
    return PdfPage(file_path, label=str(label).strip())


def _data_uri(payload: str, mimetype: str | None) -> str:
    # A data: URI cannot be mistaken for a file name; the engine decodes by content, so an unknown
    # type is fine as long as it is an image type.
    mime = mimetype if mimetype and mimetype.startswith("image/") else "image/*"
    return f"data:{mime};base64,{payload}"


def _fetched(source: str, fetcher: ImageFetcher | None, what: str) -> str | bytes:
    """Download an http(s) source through ``fetcher``; anything else (and URLs when there is no
    fetcher) goes to the engine as is, which refuses URLs unless it has a fetcher of its own."""
    if fetcher is None or not source.lower().startswith(_HTTP_PREFIXES):
        return source
    return fetch_image(source, what, fetcher)


def _fetched_video(source: str | bytes, fetcher: ImageFetcher | None, what: str) -> str | bytes:
    """:func:`_fetched` for a video: the same fetcher rule and byte cap, its failure a :class:`VideoLoadError`."""
    if fetcher is None or not isinstance(source, str) or not source.lower().startswith(_HTTP_PREFIXES):
        return source
    return fetch_source(source, f"{what}'s video", fetcher, error=VideoLoadError, kind="video")
