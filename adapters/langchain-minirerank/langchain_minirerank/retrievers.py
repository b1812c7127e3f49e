"""``MiniRerankRetriever``: a base retriever followed by the minirerank compressor, returning ``k`` documents."""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever, RetrieverLike
from pydantic import ConfigDict, Field

from .rerank import MiniRerankCompressor


class MiniRerankRetriever(BaseRetriever):
    """Retriever that fetches candidates with ``base_retriever`` and returns the ``k`` best after reranking.

    Like ``ContextualCompressionRetriever`` with a :class:`MiniRerankCompressor`, plus a number of
    results that can be set per retriever (``k=``) and per call (``invoke(query, k=...)``). The base
    retriever decides how many candidates are scored (e.g. ``search_kwargs={"k": 20}``); other keyword
    arguments of ``invoke`` are passed on to it.

    Instantiate:
        .. code-block:: python

            from langchain_minirerank import MiniRerankCompressor, MiniRerankRetriever

            retriever = MiniRerankRetriever(
                base_retriever=vectorstore.as_retriever(search_kwargs={"k": 20}),
                compressor=MiniRerankCompressor(model="Qwen/Qwen3-VL-Reranker-2B"),
                k=3,
            )
            retriever.invoke("a red bicycle")
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    base_retriever: RetrieverLike = Field(description="Retrieves the candidates that are reranked.")
    compressor: MiniRerankCompressor = Field(description="Scores the candidates against the query.")
    k: int | None = Field(None, ge=1, description="Documents returned; None: the compressor's top_n.")

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        documents = self.base_retriever.invoke(query, config={"callbacks": run_manager.get_child()}, **kwargs)
        return self.compressor._compress(documents, query, self._top_n(k))

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        documents = await self.base_retriever.ainvoke(query, config={"callbacks": run_manager.get_child()}, **kwargs)
        return await self.compressor._acompress(documents, query, self._top_n(k))

    def _top_n(self, k: int | None) -> int | None:
        if k is not None:
            if k < 1:
                raise ValueError(f"k must be >= 1, got {k}")
            return k
        return self.k if self.k is not None else self.compressor.top_n
