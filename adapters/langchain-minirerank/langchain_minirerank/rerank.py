"""``MiniRerankCompressor``: a LangChain document compressor backed by a minirerank ``MiniReranker``."""

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun, Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.runnables import Runnable, RunnableLambda
from minirerank_integrations import (
    DEMO_MODEL,
    MiniReranker,
    OnError,
    PresetName,
    RerankConfig,
    RerankResults,
    StoreConfig,
    copied_metadata,
    default_device,
)
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, field_validator, model_validator
from typing_extensions import Self, TypedDict  # pydantic needs this TypedDict before Python 3.12

from ._inputs import ImageKeys, candidate_from_document, query_from_text
from ._remote import remote_reranker

# Options that only shape how a model is loaded; a shared ``MiniReranker`` was configured by its owner.
_LOAD_OPTIONS = ("config", "cache_dir", "cache_url", "store", "device", "dtype", "batch_size")


class RerankInput(TypedDict):
    """The input of :meth:`MiniRerankCompressor.as_runnable`: a query and the documents to rerank."""

    query: str
    documents: Sequence[Document]


class MiniRerankCompressor(BaseDocumentCompressor):
    """Document compressor that reranks text and image documents with a Qwen3-VL minirerank model.

    Returns copies of the best documents, best first, each with ``metadata["relevance_score"]`` (the
    model's P(relevant), in (0, 1)); the input documents are never modified.

    A document's ``page_content`` is an image when it is base64 image data (as ``Chroma.add_images``
    stores it) or a ``data:image/...`` URI, and text otherwise; images can also come from metadata keys
    (``image_path``, ``image_base64``, and ``image_url`` once ``image_fetcher`` is given or in remote mode), and
    videos from ``video_path`` (a file; decoding needs the core's ``video`` extra, PyAV) and ``video_url`` (under
    the ``image_url`` rule). A query string that is base64 image data or a ``data:image/...`` URI is an image query.

    Setup:
        .. code-block:: bash

            pip install -U langchain-minirerank

    Instantiate:
        .. code-block:: python

            from langchain_minirerank import MiniRerankCompressor

            reranker = MiniRerankCompressor(model="Qwen/Qwen3-VL-Reranker-2B", top_n=3, config="paper")

    Use in a retriever:
        .. code-block:: python

            from langchain_classic.retrievers import ContextualCompressionRetriever

            retriever = ContextualCompressionRetriever(base_compressor=reranker, base_retriever=base)
            retriever.invoke("a red bicycle")
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    model: str | Path | MiniReranker = Field(
        DEMO_MODEL,
        description="A Qwen3-VL reranker checkpoint (local folder or hub id, e.g. Qwen/Qwen3-VL-Reranker-2B) to "
        "load, or a loaded MiniReranker to share between components. Default: the embedded demo model, "
        "trained on synthetic data only.",
    )
    top_n: int | None = Field(5, ge=1, description="Documents returned, best first; None returns all.")
    score_threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="Documents scoring below this P(relevant) are left out; None keeps all."
    )
    on_error: OnError = Field(
        "raise",
        description="A document whose image cannot be read: 'raise' raises the engine's CandidateError "
        "naming it; 'skip' leaves it out (and logs a warning).",
    )
    config: RerankConfig | PresetName | None = Field(
        None,
        description="The engine's RerankConfig or preset name, used when loading; None: the configuration saved with "
        "the checkpoint, else 'paper'.",
    )
    cache_dir: str | Path | None = Field(
        None, description="Directory of the persistent prefix store (store.dir), used when loading; None: in memory."
    )
    cache_url: str | None = Field(
        None,
        description="A Redis or Valkey server shared by replicas (store.url: redis://host:6379/0, rediss://; password "
        "in the URL or $MINIRERANK_REDIS_PASSWORD), used when loading, instead of cache_dir.",
    )
    store: StoreConfig | None = Field(
        None,
        description="The prefix store, used when loading: a StoreConfig or a dict of one (a directory or a Redis URL, "
        "the precision such as int8, size and memory limits in bytes, ttl in seconds); None: in memory. cache_dir "
        "and cache_url are shorthands for its dir and url.",
    )
    device: str | None = Field(
        None, description="Where the model runs, used when loading; None: cuda, mps or cpu, whichever is present."
    )
    dtype: str | None = Field(
        None, description="Weight dtype, used when loading; None: 'auto' (bfloat16 on CUDA, float32 elsewhere)."
    )
    batch_size: int | None = Field(
        None, gt=0, description="Pairs per forward pass, used when loading; None: the config's value."
    )
    image_path_keys: tuple[str, ...] = Field(
        ("image_path",), description="Metadata keys whose values (a path or a list of paths) are image files."
    )
    image_base64_keys: tuple[str, ...] = Field(
        ("image_base64",), description="Metadata keys whose values are base64 images or data: URIs."
    )
    mime_type_key: str | None = Field(
        "mime_type",
        description="Metadata key of the image media type (e.g. 'image/png'). It types the base64 images; "
        "without metadata images, an image/* type marks page_content itself as an image.",
    )
    image_url_keys: tuple[str, ...] = Field(
        ("image_url",),
        description="Metadata keys of http(s) image URLs; read only when image_fetcher is set or in remote mode "
        "(base_url: the server fetches them from its allowed hosts).",
    )
    video_path_keys: tuple[str, ...] = Field(
        ("video_path",),
        description="Metadata keys whose values (a path, a file:// URI, or a list of them) are video files, scored "
        "with the document (the core's video extra decodes them).",
    )
    video_url_keys: tuple[str, ...] = Field(
        ("video_url",),
        description="Metadata keys of http(s) video URLs; read as image_url_keys are (with image_fetcher, which "
        "then downloads videos too, or in remote mode).",
    )
    image_fetcher: Callable[[str], bytes] | None = Field(
        None,
        description="Downloads an image or video URL's bytes. Nothing is fetched here without it, and image_url and "
        "video_url keys are ignored unless in remote mode. With a shared MiniReranker it must be the engine's own "
        "image_fetcher.",
    )
    query_image_paths: bool = Field(
        False, description="Treat a query string naming an existing file as an image query."
    )
    base_url: str | None = Field(
        None,
        description="A `minirerank serve` server (e.g. http://127.0.0.1:8000) that scores instead of a local model; "
        "`model` is then the served model id. Image and video URLs go to the server as URLs, local images and "
        "videos as data URIs.",
    )
    api_key: SecretStr | None = Field(None, description="Bearer key of the server (remote mode).")

    _reranker: MiniReranker = PrivateAttr()

    @field_validator("store", mode="before")
    @classmethod
    def _store(cls, value: object) -> object:
        # The store's own validation and message (ConfigError naming the setting), not a second copy.
        return None if value is None else StoreConfig.model_validate(value)

    @model_validator(mode="after")
    def _load_reranker(self) -> Self:
        """Load the model named by ``model``, or check the options against a shared engine."""
        if self.base_url is not None:  # remote mode (_remote.py)
            key = self.api_key.get_secret_value() if self.api_key is not None else None
            given = [name for name in _LOAD_OPTIONS if getattr(self, name) is not None]
            self._reranker = remote_reranker(self.base_url, key, self.model, given)  # type: ignore[assignment]
            return self
        if isinstance(self.model, MiniReranker):
            given = [name for name in _LOAD_OPTIONS if getattr(self, name) is not None]
            if given:
                raise ValueError(
                    f"{', '.join(given)} only apply when MiniRerankCompressor loads the model; with a shared "
                    "MiniReranker pass them to MiniReranker.from_pretrained (or set reranker.config) instead"
                )
            if self.image_fetcher is not None and self.image_fetcher is not self.model.image_fetcher:
                raise ValueError(
                    "image_fetcher differs from the shared MiniReranker's; pass it to "
                    "MiniReranker.from_pretrained(image_fetcher=...) and give the compressor the same callable"
                )
            self._reranker = self.model
            return self
        store = StoreConfig.from_options(store=self.store, cache_dir=self.cache_dir, cache_url=self.cache_url)
        reranker = MiniReranker.from_pretrained(
            self.model,
            config=self.config,
            device=self.device or default_device(),
            dtype=self.dtype or "auto",
            image_fetcher=self.image_fetcher,
            store=store,
        )
        if self.batch_size is not None:
            reranker.config = reranker.config.model_copy(update={"batch_size": self.batch_size})
        self._reranker = reranker
        return self

    @property
    def reranker(self) -> MiniReranker:
        """The engine this compressor calls (shared or loaded by it)."""
        return self._reranker

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Rerank ``documents`` against ``query`` and keep the best ``top_n``.

        Args:
            documents: The retrieved documents (text, images, or both).
            query: The query text, or an image as base64 or a ``data:image/...`` URI.
            callbacks: Accepted for the interface; the engine reports no events.

        Returns:
            Copies of the kept documents, best first, with ``metadata["relevance_score"]``.

        Raises:
            CandidateError: a document cannot be scored and ``on_error`` is ``"raise"``.
            InputError: the query is empty.
        """
        return self._compress(documents, query, self.top_n)

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Async :meth:`compress_documents`: the engine runs in a worker thread, the event loop stays free.

        Args:
            documents: The retrieved documents (text, images, or both).
            query: The query text, or an image as base64 or a ``data:image/...`` URI.
            callbacks: Accepted for the interface; the engine reports no events.

        Returns:
            Copies of the kept documents, best first, with ``metadata["relevance_score"]``.
        """
        return await self._acompress(documents, query, self.top_n)

    def as_runnable(self) -> Runnable[RerankInput, list[Document]]:
        """This compressor as a Runnable from ``{"query": str, "documents": [Document, ...]}`` to documents.

        It composes with a retriever in LCEL, which keeps the query beside the retrieved documents:

        .. code-block:: python

            from langchain_core.runnables import RunnablePassthrough

            chain = {"query": RunnablePassthrough(), "documents": retriever} | reranker.as_runnable()
            chain.invoke("a red bicycle")

        Returns:
            A Runnable with sync and async paths (``ainvoke`` awaits the engine's ``arerank``).
        """

        # Annotations here are evaluated (no `from __future__ import annotations` in this module): the
        # Runnable derives its input schema from them.
        def rerank(inputs: RerankInput, run_manager: CallbackManagerForChainRun) -> list[Document]:
            query, documents = _unpack(inputs)
            return list(self.compress_documents(documents, query, callbacks=run_manager.get_child()))

        async def arerank(inputs: RerankInput, run_manager: AsyncCallbackManagerForChainRun) -> list[Document]:
            query, documents = _unpack(inputs)
            return list(await self.acompress_documents(documents, query, callbacks=run_manager.get_child()))

        return RunnableLambda(rerank, afunc=arerank, name=type(self).__name__)

    # -- shared by the compressor, its runnable and MiniRerankRetriever ---------------------------

    def _compress(self, documents: Sequence[Document], query: str, top_n: int | None) -> list[Document]:
        if not documents:
            return []
        query_input = query_from_text(query, image_paths=self.query_image_paths)
        candidates = [candidate_from_document(document, self._image_keys()) for document in documents]
        results = self._reranker.rerank(query_input, candidates, top_n=top_n, on_error=self.on_error)
        return self._scored_copies(documents, results)

    async def _acompress(self, documents: Sequence[Document], query: str, top_n: int | None) -> list[Document]:
        if not documents:
            return []
        query_input = query_from_text(query, image_paths=self.query_image_paths)
        candidates = [candidate_from_document(document, self._image_keys()) for document in documents]
        results = await self._reranker.arerank(query_input, candidates, top_n=top_n, on_error=self.on_error)
        return self._scored_copies(documents, results)

    def _image_keys(self) -> ImageKeys:
        # URLs are read when something will fetch them: the image fetcher here, or the server in remote mode.
        fetched = self.image_fetcher is not None or self.base_url is not None
        return ImageKeys(
            paths=self.image_path_keys,
            base64=self.image_base64_keys,
            urls=self.image_url_keys if fetched else (),
            mime_type=self.mime_type_key,
            video_paths=self.video_path_keys,
            video_urls=self.video_url_keys if fetched else (),
        )

    def _scored_copies(self, documents: Sequence[Document], results: RerankResults) -> list[Document]:
        kept = []
        for result in results:
            if self.score_threshold is not None and result.score < self.score_threshold:
                break  # results are sorted best first
            document = documents[result.index]
            metadata: dict[str, Any] = copied_metadata(document.metadata)  # never fails on an uncopyable value
            metadata["relevance_score"] = result.score
            kept.append(document.model_copy(update={"metadata": metadata}))
        return kept


def _unpack(inputs: RerankInput) -> tuple[str, Sequence[Document]]:
    if not isinstance(inputs, dict) or "query" not in inputs or "documents" not in inputs:
        raise TypeError(
            "MiniRerankCompressor.as_runnable() expects {'query': str, 'documents': [Document, ...]}, e.g. "
            "{'query': RunnablePassthrough(), 'documents': retriever} | reranker.as_runnable()"
        )
    return inputs["query"], inputs["documents"]
