"""What the handlers of one running service share: the engine (once loaded), the micro-batcher, the metrics and
the URL policy."""

from __future__ import annotations

import threading
import time
import uuid

from .. import MiniReranker
from ..store.memo import Memo
from .batcher import MicroBatcher
from .errors import ServeError
from .inputs import check_pixels
from .metrics import ServeMetrics
from .settings import ServeSettings
from .urls import URLPolicy

__all__ = ["Service"]

#: Texts whose token counts are remembered (a few hundred bytes each).
_COUNTED_TEXTS = 4096


class Service:
    """What the handlers share: the engine (once loaded), the batcher, the metrics and the URL policy."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.engine: MiniReranker | None = None
        self.load_error: BaseException | None = None
        self.batcher: MicroBatcher | None = None
        self.metrics = ServeMetrics(lambda: self.engine.counters if self.engine is not None else None)
        self.policy = URLPolicy(
            allowed_hosts=settings.allowed_image_hosts,
            allow_private=settings.allow_private_addresses,
            timeout_s=settings.image_fetch_timeout_s,
            max_bytes=settings.image_fetch_max_bytes,
        )
        self.started = int(time.time())
        #: Names this server among replicas: the X-Minirerank-Instance header of every answer.
        self.instance = uuid.uuid4().hex[:12]
        self._token_counts: Memo[str, int] = Memo(_COUNTED_TEXTS)  # text -> its token count
        self._counted_by: object = None
        self._counts_lock = threading.Lock()

    def fetch_image(self, url: str) -> bytes:
        """The engine's ``image_fetcher``: the URL policy, then the pixel limit on the bytes fetched."""
        data = self.policy.fetch(url)
        check_pixels(data, f"the image at {url}", self.settings.max_image_pixels)
        return data

    def ready(self) -> tuple[MiniReranker, MicroBatcher]:
        if self.engine is None or self.batcher is None:
            why = f"the model failed to load: {self.load_error}" if self.load_error else "the model is loading"
            raise ServeError(503, why, kind="unavailable", headers={"Retry-After": str(self.settings.retry_after_s)})
        return self.engine, self.batcher

    def count_tokens(self, texts: list[str | None]) -> list[int]:
        """Text tokens of each text by the engine's tokenizer (0 for none): the usage the engine does not give.
        Images and the fixed prompt template are not counted."""
        assert self.engine is not None
        tokenizer = self.engine.backbone.tokenizer
        with self._counts_lock:  # conversions run on several threads
            if tokenizer is not self._counted_by:  # another engine's tokenizer: counts made with the old one go
                self._token_counts.clear()
                self._counted_by = tokenizer
            remembered = {t: self._token_counts.get(t) for t in texts if t}
        known = {t: n for t, n in remembered.items() if n is not None}
        new = list(dict.fromkeys(t for t in texts if t and t not in known))
        # A tokenizer call costs ~1 ms whatever it holds: texts seen before (a query sent again, a document reranked
        # for another query) are counted from memory.
        for text, ids in zip(new, tokenizer(new, add_special_tokens=False)["input_ids"] if new else []):
            known[text] = len(ids)
        for text in new:
            self._token_counts.put(text, known[text])
        return [known[t] if t else 0 for t in texts]
