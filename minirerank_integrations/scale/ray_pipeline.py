"""Distributed pre-caching: a Ray Data pipeline over a document list, an actor pool with one model each.

Each actor loads the reranker once and ingests batches of documents into the shared store (a Redis
URL, or a directory every node can reach). The driver streams the outcomes back for its progress bar and
report. An actor that dies is restarted by Ray Data and its batch is retried: documents it stored before
dying are then found in the store and reported as already present, so nothing reported stored is lost
and a rerun stores only what is missing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..demo_model import DEMO_MODEL
from ..engine.config import PresetName, RerankConfig
from ..engine.inputs import Candidate
from ..errors import ConfigError, InputError
from ..store.config import StoreConfig
from .ingest import ingest
from .report import IngestReport, Outcome

logger = logging.getLogger(__name__)


class _PrecacheWorker:
    """A Ray Data actor: one loaded model, called with batches of JSON-encoded documents."""

    def __init__(self, model: str, load_options: dict[str, Any], store: dict[str, Any]) -> None:
        from ..engine.reranker import MiniReranker

        if isinstance(load_options.get("config"), dict):
            load_options = {**load_options, "config": RerankConfig.model_validate(load_options["config"])}
        settings = StoreConfig.model_validate(store)
        self.engine = MiniReranker.from_pretrained(model, **load_options, store=settings)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        records = [json.loads(str(raw)) for raw in batch["record"]]
        documents = [Candidate(text=r["text"], images=r["images"], id=r["id"]) for r in records]
        outcomes = ingest(self.engine, documents, [r["position"] for r in records])
        return {
            "position": [o.position for o in outcomes],
            "id": ["" if o.id is None else o.id for o in outcomes],
            "has_id": [o.id is not None for o in outcomes],
            "status": [o.status for o in outcomes],
            "reason": [o.reason or "" for o in outcomes],
            "bytes": [o.bytes for o in outcomes],
        }


def precache_on_ray(
    documents: Sequence[Candidate],
    *,
    store: StoreConfig | dict[str, Any] | None = None,
    cache_url: str | None = None,
    cache_dir: str | Path | None = None,
    model: str | Path = DEMO_MODEL,
    config: RerankConfig | PresetName | None = None,
    workers: int = 2,
    batch_size: int = 8,
    cache_storage: str | None = None,
    cache_namespace: str | None = None,
    dtype: str = "float32",
    gpus_per_worker: float | None = None,
    progress: bool = True,
) -> IngestReport:
    """Pre-cache ``documents`` on the current Ray cluster (``ray.init()`` first, or a local one starts).

    Args:
        documents: candidates whose images are paths every worker can read, or base64 text.
        store: the shared store's settings (a :class:`StoreConfig` or a dict of one): a Redis ``url``, or a
            ``dir`` every worker reaches. ``cache_url``, ``cache_dir``, ``cache_storage`` and
            ``cache_namespace`` are shorthands that set (or change) those settings. The actors keep no
            memory tier (an ingesting actor never reads its entries back).
        model, config, dtype: as in ``MiniReranker.from_pretrained``.
        workers: actors in the pool, each with its own loaded model.
        batch_size: documents per call of an actor.
        gpus_per_worker: GPUs per actor; None: 1 when the cluster has a GPU per worker, else 0 (CPU).
        progress: show a progress bar of documents handled.

    Resumable: documents whose prefix the store holds are reported as present and not recomputed.

    Raises:
        ConfigError: invalid store settings, or a store the workers cannot share (none, or memory).
    """
    settings = StoreConfig.from_options(
        store=store,
        cache_url=cache_url,
        cache_dir=None if cache_dir is None else str(cache_dir),
        cache_storage=cache_storage,
        cache_namespace=cache_namespace,
        cache_memory_limit=0,
    )
    if settings.kind == "memory":
        raise ConfigError(
            "pass a shared store: a Redis url (cache_url) or a directory every worker reaches (cache_dir)"
        )
    try:
        import ray
        import ray.data
    except ImportError as error:
        raise ConfigError("pre-caching on Ray needs Ray Data: pip install 'minirerank-integrations[ray]'") from error
    if workers < 1 or batch_size < 1:
        raise ConfigError(f"workers ({workers}) and batch_size ({batch_size}) must be >= 1")
    documents = list(documents)
    for position, document in enumerate(documents):
        if not all(isinstance(image, str) for image in document.images):
            raise InputError(
                f"document {position} ({document.id}): images sent to Ray workers must be paths or base64 text"
            )
    start = time.perf_counter()
    if not documents:
        return IngestReport(workers=workers)
    if not ray.is_initialized():
        ray.init()
    if gpus_per_worker is None:
        gpus_per_worker = 1.0 if ray.cluster_resources().get("GPU", 0) >= workers else 0.0
    load_options: dict[str, Any] = {
        "config": config.model_dump() if isinstance(config, RerankConfig) else config,
        "device": "cuda" if gpus_per_worker > 0 else "cpu",
        "dtype": dtype,
    }
    items = [
        {"record": json.dumps({"position": i, "id": d.id, "text": d.text, "images": list(d.images)})}
        for i, d in enumerate(documents)
    ]
    context = ray.data.DataContext.get_current()
    ray_bars, context.enable_progress_bars = context.enable_progress_bars, False  # ours counts documents
    outcomes: list[Outcome] = []
    try:
        dataset = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 4 * workers)))
        results = dataset.map_batches(
            _PrecacheWorker,
            fn_constructor_kwargs={"model": str(model), "load_options": load_options, "store": settings.model_dump()},
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=1,
            num_gpus=gpus_per_worker,
            batch_format="numpy",
        )
        with tqdm(total=len(items), disable=not progress, desc="precache (ray)", unit="doc") as bar:
            for row in results.iter_rows():
                outcomes.append(
                    Outcome(
                        position=int(row["position"]),
                        id=str(row["id"]) if bool(row["has_id"]) else None,
                        status=str(row["status"]),  # type: ignore[arg-type]
                        reason=str(row["reason"]) or None,
                        bytes=int(row["bytes"]),
                    )
                )
                bar.update(1)
    finally:
        context.enable_progress_bars = ray_bars
    return IngestReport.of(outcomes, seconds=time.perf_counter() - start, workers=workers)
