"""The wire format: request and response models of the rerank API vLLM serves (Cohere- and Jina-compatible),
its score API, and this service's pre-cache report. Handlers live in :mod:`.app`; nothing here knows HTTP.

A query or document is a string, ``{"text": ...}`` (Cohere v1, Jina), or ``{"content": [part, ...]}`` whose parts
are ``{"type": "text", "text": ...}``, ``{"type": "image_url", "image_url": {"url": ...}}`` and
``{"type": "video_url", "video_url": {"url": ...}}`` (vLLM's multimodal form).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Lenient(BaseModel):
    # Clients send fields of newer API versions (Cohere's max_tokens_per_doc, vLLM's truncate_prompt_tokens);
    # ignoring what this service does not use keeps them working.
    model_config = ConfigDict(extra="ignore")


class TextPart(_Lenient):
    type: Literal["text"]
    text: str


class ImageURL(_Lenient):
    url: str = Field(description="an http(s) URL (fetched only from allowed hosts) or a data: URI")


class ImagePart(_Lenient):
    type: Literal["image_url"]
    image_url: ImageURL


class VideoURL(_Lenient):
    url: str = Field(description="an http(s) URL (fetched only from allowed hosts) or a data: URI of the video file")


class VideoPart(_Lenient):
    type: Literal["video_url"]
    video_url: VideoURL


Part = Annotated[TextPart | ImagePart | VideoPart, Field(discriminator="type")]


class Content(_Lenient):
    """vLLM's multimodal item: text, images and videos in order (the engine reads all videos, then all images, then
    all text)."""

    content: list[Part]


class TextItem(_Lenient):
    """Cohere v1 and Jina's ``{"text": ...}`` document."""

    text: str


Item = str | Content | TextItem


class RerankRequest(_Lenient):
    model: str | None = None
    query: Item
    documents: list[Item]
    top_n: int | None = Field(None, ge=0, description="the best n; None or 0 returns every document (as vLLM)")
    return_documents: bool = False
    on_error: Literal["raise", "skip"] = Field(
        "raise", description="extension: 'skip' leaves bad documents out and lists them in `skipped`"
    )


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class ReturnedDocument(BaseModel):
    text: str | None = None
    content: list[dict[str, Any]] | None = None


class RerankResultItem(BaseModel):
    index: int
    relevance_score: float
    document: ReturnedDocument | None = None


class SkippedItem(BaseModel):
    index: int
    error: str


class RerankResponse(BaseModel):
    id: str
    model: str
    usage: Usage
    results: list[RerankResultItem]
    skipped: list[SkippedItem] | None = None


class ScoreRequest(_Lenient):
    """vLLM's score API with one query: ``text_1`` the query, ``text_2`` one document or a list."""

    model: str | None = None
    text_1: Item
    text_2: Item | list[Item]


class ScoreData(BaseModel):
    index: int
    object: Literal["score"] = "score"
    score: float


class ScoreResponse(BaseModel):
    id: str
    object: Literal["list"] = "list"
    created: int
    model: str
    data: list[ScoreData]
    usage: Usage


class PrecacheRequest(_Lenient):
    documents: list[Item]


class PrecacheOutcome(BaseModel):
    index: int
    status: Literal["stored", "present", "failed"]
    reason: str | None = None
    bytes: int = 0


class PrecacheResponse(BaseModel):
    documents: int
    stored: int
    present: int
    failed: int
    results: list[PrecacheOutcome]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "minirerank"
    config: dict[str, Any]


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = Field(None, description="the request field at fault, e.g. documents[3]")
    code: int


class ErrorResponse(BaseModel):
    error: ErrorBody
