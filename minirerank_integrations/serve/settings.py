"""What a running service allows and how it batches: one validated model, every field with its unit."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ServeSettings(BaseModel):
    """Limits, batching and access of ``minirerank serve``; the CLI's flags map one to one onto these fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_name: str = Field(default="minirerank-demo", description="the model id /v1/models lists and responses echo")
    api_key: str | None = Field(
        default=None, description="when set, every /v1, /v2 and /rerank call needs `Authorization: Bearer <key>`"
    )
    # -- limits ---------------------------------------------------------------------------------
    max_body_bytes: int = Field(
        default=32 * 1024 * 1024, gt=0, description="request body size limit, bytes (413 above)"
    )
    max_documents: int = Field(default=1000, gt=0, description="documents per request (422 above)")
    max_image_pixels: int = Field(
        default=16_000_000,
        gt=0,
        description="pixels (width x height, as the image header declares) per image (422 above)",
    )
    max_images_per_item: int = Field(default=16, gt=0, description="images in one query or document (422 above)")
    allowed_image_hosts: tuple[str, ...] = Field(
        default=(),
        description="hosts whose http(s) image URLs may be fetched: exact names or '*.example.com'; empty: "
        "every image URL is refused (data: URIs are always accepted)",
    )
    allow_private_addresses: bool = Field(
        default=False,
        description="fetch from loopback, link-local and private addresses too (never on by default: SSRF)",
    )
    image_fetch_timeout_s: float = Field(default=10.0, gt=0, description="seconds one image download may take")
    image_fetch_max_bytes: int = Field(default=20 * 1024 * 1024, gt=0, description="bytes one image download may carry")
    request_timeout_s: float = Field(default=60.0, gt=0, description="seconds from arrival to answer before a 504")
    max_queue: int = Field(
        default=256,
        gt=0,
        description="requests admitted (waiting or being scored) at once; beyond it a 503 with Retry-After",
    )
    retry_after_s: int = Field(default=1, ge=0, description="the Retry-After a full queue answers with, seconds")
    # -- batching across requests ---------------------------------------------------------------
    batching: bool = Field(default=True, description="score requests that arrive together in one engine call")
    batch_wait_ms: float = Field(
        default=5.0, ge=0, description="how long the first request of a batch waits for others to join, milliseconds"
    )
    batch_max_pairs: int = Field(
        default=512, gt=0, description="pairs one merged batch may hold; a request larger than this runs alone"
    )
    batch_workers: int = Field(
        default=1,
        gt=0,
        description="batches handed to the engine at once; inputs are prepared per request as they arrive, so one "
        "keeps every request that waited for the model in the next batch",
    )
