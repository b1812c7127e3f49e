"""The measurements of ``minirerank bench``: every row in one process, on identical inputs.

Rows, per image size:

- ``dense-official``: ``Qwen3VLModel`` forward of the official query-first prompt, one pair per forward, the
  score read from the last token (what users of the official reranker run). ``dense_pairs`` pairs are timed
  and the time per pair is scaled to the query's N (``scaled`` says so).
- ``dense-batched``: the same prompts, ``dense_batch`` pairs left-padded into one forward (at every size).
- the engine, cumulatively: ``vision-first`` (prefix reuse, full band, every layer, every token), ``+band``
  (the paper's band, every layer), ``+exit`` (band and exit), ``paper`` (+ pruning: the preset). Each
  ``cold`` (empty store: every prefix computed; ingestion is timed through ``precache``, and a cold query's
  time per pair is ingestion per document plus the warm pair, measured directly for ``paper``) and ``warm``
  (every document precached in a disk store, read back by a fresh store object).

A warm store of N documents holds one entry per document key; beyond the ``ingest_docs`` documents really
ingested, entries are those computed ones written again under the other documents' keys (same shapes and
bytes; speed does not depend on values), so warm rows at N = 1000 need no thousand ingestions.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from ..engine.config import RerankConfig
from ..engine.images import image_digest, prepare_image
from ..engine.inputs import Candidate, Query, as_candidate
from ..engine.layers import compute_prefix
from ..engine.prompts import PreparedImage, SideContent
from ..engine.pruning import embedder_importances, keep_mask
from ..engine.reranker import MiniReranker
from ..store import DiskPrefixStore, PrefixEntry
from ..store.codec import encode_entry
from ..tiny_checkpoint import build_image_processor
from .counting_store import CountingStore
from .dense import official_scores
from .machine import machine
from .measure import PeakMemory, timed
from .outputs import write_outputs
from .rows import ROW_FIELDS, full_row
from .settings import ENGINE_METHODS, BenchSettings
from .shapes import SHAPES, random_backbone
from .workload import QUERIES, bench_tokenizer, page, text_candidate

logger = logging.getLogger(__name__)

#: The key measured blobs are bound to: a key is 64 hex digits, so the size is that of a real entry.
_SIZE_KEY = "0" * 64

#: One row of the result (:data:`~.rows.ROW_FIELDS`, None where a field does not apply).
Row = dict[str, object]
#: An image's vision features as the encoder returns them: [tokens, hidden] and the DeepStack ones.
Features = tuple[torch.Tensor, list[torch.Tensor]]


class Bench:
    """One run: the model, the inputs, and the rows measured so far (written out after every row)."""

    def __init__(self, settings: BenchSettings, on_row: Callable[[Row], None] | None = None) -> None:
        self.s = settings  # validated: a known shape, known methods, sizes and counts in range
        self.on_row = on_row
        self.rows: list[Row] = []
        self.profiles: dict[str, str] = {}
        self.stages: list[dict[str, object]] = []
        self.notes: list[str] = []
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[settings.dtype]
        started = time.perf_counter()
        self.tokenizer, self.vocabulary = bench_tokenizer(settings.vocabulary)
        self.backbone = random_backbone(
            settings.shape,
            self.tokenizer,
            build_image_processor(),
            device=settings.device,
            dtype=dtype,
            seed=settings.seed,
        )
        self.build_seconds = time.perf_counter() - started
        self.depth = self.backbone.num_layers
        self.query = Query(text=QUERIES[0])
        self.memory = PeakMemory(settings.device)
        self.work = Path(settings.work_dir or tempfile.mkdtemp(prefix="minirerank-bench-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self._dense_per_pair: dict[tuple[str, int], float] = {}
        self._ingested: dict[tuple[object, ...], tuple[float, PeakMemory, PrefixEntry]] = {}

    # -- configurations -----------------------------------------------------------------------------

    def config(self, method: str, **extra: object) -> RerankConfig:
        paper = RerankConfig.preset("paper", self.depth)
        fields: dict[str, dict[str, object]] = {
            "vision-first": {"format": "vision_first"},
            "+band": {"format": "vision_first", "band": paper.band},
            "+exit": {"format": "vision_first", "band": paper.band, "exit_layer": paper.exit_layer},
            "paper": paper.model_dump(),
        }
        return RerankConfig.model_validate({**fields[method], **extra}).resolve(self.depth)

    # -- rows ---------------------------------------------------------------------------------------

    def add(self, **row: object) -> Row:
        full = full_row(**row)
        size = full["image_size"]
        dense = self._dense_per_pair.get((str(full["workload"]), size if isinstance(size, int) else 0))
        seconds = full["seconds_per_pair"]
        if dense and isinstance(seconds, (int, float)):
            full["ratio_to_dense_official"] = seconds / dense
        self.rows.append(full)
        logger.info("row %s", json.dumps(full))
        if self.on_row is not None:
            self.on_row(full)
        return full

    def timed(self, fn: Callable[[], object]) -> tuple[float, PeakMemory]:
        return timed(fn, self.s.device)

    # -- dense baselines ----------------------------------------------------------------------------

    def detailed(self, size: int) -> bool:
        return self.s.detail_sizes is None or size in self.s.detail_sizes

    def dense_rows(self, workload: str, size: int, pairs: list[tuple[SideContent, SideContent]], n: int) -> None:
        timed = pairs[: self.s.dense_pairs]
        seconds, memory = self.timed(lambda: [official_scores(self.backbone, [p]) for p in timed])
        per_pair = seconds / len(timed)
        self._dense_per_pair[(workload, size)] = per_pair
        tokens = self._image_tokens(pairs[0])
        common = {"workload": workload, "image_size": size, "image_tokens": tokens, "n": n, "state": "n/a"}
        self.add(
            **common,
            method="dense-official",
            pairs_timed=len(timed),
            scaled=len(timed) != n,
            seconds_per_query=per_pair * n,
            seconds_per_pair=per_pair,
            peak_rss_bytes=memory.peak_rss,
            peak_gpu_bytes=memory.peak_gpu,
        )
        batch = pairs[: self.s.dense_batch]  # at every size: the cold-query target compares against it
        seconds, memory = self.timed(lambda: official_scores(self.backbone, batch))
        self.add(
            **common,
            method="dense-batched",
            pairs_timed=len(batch),
            scaled=len(batch) != n,
            seconds_per_query=seconds / len(batch) * n,
            seconds_per_pair=seconds / len(batch),
            peak_rss_bytes=memory.peak_rss,
            peak_gpu_bytes=memory.peak_gpu,
        )

    @staticmethod
    def _image_tokens(pair: tuple[SideContent, SideContent]) -> int:
        return sum(im.num_tokens for side in pair for im in side.images)

    # -- the engine ---------------------------------------------------------------------------------

    def _side(self, candidate: Candidate) -> SideContent:
        images = []
        for source in candidate.images:
            image = prepare_image(source)
            images.append(self.backbone.prepared_image(image, image_digest(image)))
        return SideContent(candidate.text, tuple(images))

    def _engine(self, config: RerankConfig, directory: Path) -> tuple[MiniReranker, CountingStore]:
        disk = DiskPrefixStore(directory, storage=self.s.storage, size_limit=2**40)
        sizes: dict[tuple, int] = {}

        def stored(entry: PrefixEntry) -> int:  # every entry of a shape encodes to the same size
            shape = (tuple(entry.keys.shape), entry.length)
            if shape not in sizes:
                sizes[shape] = len(encode_entry(entry, key=_SIZE_KEY, storage=self.s.storage))
            return sizes[shape]

        store = CountingStore(disk, stored)
        return MiniReranker(self.backbone, config, store=store), store

    def _doc_key(self, engine: MiniReranker, candidate: Candidate) -> str:
        side = engine.prepare(as_candidate(candidate), "a benchmark document")
        return engine.document_prefix(side)[0]

    def _sizes(self, engine: MiniReranker, entry: PrefixEntry, prefix_tokens: int) -> dict[str, object]:
        shape = SHAPES[self.s.shape]
        element = torch.empty(0, dtype=getattr(torch, self.s.storage)).element_size()
        stored = len(encode_entry(entry, key=_SIZE_KEY, storage=self.s.storage))
        band = engine.config.band or (0, 0)
        full = shape.kv_bytes_per_token(self.depth, element) * prefix_tokens
        return {
            "stored_bytes_per_doc": stored,
            "stored_bytes_per_doc_int8": len(encode_entry(entry, key=_SIZE_KEY, storage="int8")),
            "band_read_bytes_per_doc": shape.kv_bytes_per_token(band[1] - band[0], element) * entry.length,
            "full_kv_bytes_per_doc": full,
            "stored_vs_full_kv": stored / full,
            "prefix_tokens": entry.length,
        }

    def engine_rows(self, size: int, docs: list[Candidate], method: str, **extra: object) -> None:
        """Cold and warm rows of one engine configuration over ``docs`` (text query over image documents)."""
        label = method + ("+instruction-in-prefix" if extra.get("instruction_in_prefix") else "")
        config = self.config(method, **extra)
        directory = self.work / f"{label}-{size}"
        shutil.rmtree(directory, ignore_errors=True)
        engine, store = self._engine(config, directory)
        ingest = docs[: self.s.ingest_docs]
        # Configurations whose prefixes are identical (e.g. +band and +exit: the exit does not shape a prefix)
        # share one ingestion measurement; the entry is written to this configuration's own store.
        signature = (size, config.band, config.keep_ratio, config.pruning_guide_layers, config.instruction_in_prefix)
        key = self._doc_key(engine, ingest[0])
        if signature in self._ingested:
            per_doc, memory, entry = self._ingested[signature]
            store.inner.put(key, entry)
        else:
            seconds, memory = self.timed(lambda: engine.precache(ingest, progress=False))
            per_doc = seconds / len(ingest)
            stored = store.inner.get(key)
            assert stored is not None, "precache stored no entry"
            entry = stored
            self._ingested[signature] = (per_doc, memory, entry)
        side = self._side(ingest[0])
        prefix_tokens = len(engine.document_prefix(side)[1].input_ids)
        sizes = self._sizes(engine, entry, prefix_tokens)
        suffix_tokens = len(engine.segments(self._side_of_query(), side, side="document")[1].input_ids)  # type: ignore[union-attr]
        common = {
            "workload": "text->image",
            "image_size": size,
            "image_tokens": side.images[0].num_tokens,
            "method": label,
            "suffix_tokens": suffix_tokens,
            **sizes,
        }
        self.add(
            **common,
            state="ingest",
            n=len(ingest),
            pairs_timed=len(ingest),
            seconds_per_pair=per_doc,
            ingestion_docs_per_s=1 / per_doc,
            peak_rss_bytes=memory.peak_rss,
            peak_gpu_bytes=memory.peak_gpu,
        )
        cap = self.s.full_kv_max_n if method == "vision-first" else None
        ns = [n for n in self.s.warm_n if cap is None or n <= cap]
        if self.s.large_n and method == "paper" and not extra and size == min(self.s.sizes):
            ns.append(self.s.large_n)
        keys = {0: key}
        for n in sorted(ns):
            for index in range(len(keys), n):  # the warm store holds one entry per document
                keys[index] = self._doc_key(engine, docs[index])
                if keys[index] not in store.inner:
                    store.inner.put(keys[index], entry)
            store.close()
            warm, counting = self._engine(config, directory)  # a fresh store object: entries come from disk
            subset = docs[:n]
            seconds, memory = self.timed(partial(warm.rerank, self.query, subset))
            assert warm.counters.prefix_computations == 0, "a warm query computed a prefix"
            per_pair = seconds / n
            self.add(
                **common,
                state="warm",
                n=n,
                pairs_timed=n,
                seconds_per_query=seconds,
                seconds_per_pair=per_pair,
                peak_rss_bytes=memory.peak_rss,
                peak_gpu_bytes=memory.peak_gpu,
                store_bytes_read_per_pair=counting.read_bytes / max(1, counting.reads),
                store_read_mb_per_s=counting.read_bytes / max(counting.read_seconds, 1e-9) / 2**20,
            )
            self.add(
                **common,
                state="cold",
                n=n,
                pairs_timed=len(ingest),
                scaled=True,
                composed=True,
                seconds_per_query=(per_doc + per_pair) * n,
                seconds_per_pair=per_doc + per_pair,
            )
            counting.close()
            store = self._engine(config, directory)[1]
            if self.s.profile and method == "paper" and not extra and n == max(self.s.warm_n):
                batch = subset[: config.batch_size]  # one batch of pairs shows where warm time goes
                self.profiles[f"warm paper query, {size}x{size}, N={len(batch)}"] = self._profile(
                    partial(self._rerank_fresh, config, directory, batch)
                )
        store.close()
        if method == "paper" and not extra:  # the cold query itself, measured: a fresh store, fresh documents
            cold_dir = self.work / f"cold-{size}"
            shutil.rmtree(cold_dir, ignore_errors=True)
            cold, _ = self._engine(config, cold_dir)
            fresh = docs[len(docs) - len(ingest) :]
            seconds, memory = self.timed(lambda: cold.rerank(self.query, fresh))
            self.add(
                **common,
                state="cold",
                n=len(fresh),
                pairs_timed=len(fresh),
                seconds_per_query=seconds,
                seconds_per_pair=seconds / len(fresh),
                peak_rss_bytes=memory.peak_rss,
                peak_gpu_bytes=memory.peak_gpu,
            )
            cold.store.close()
            shutil.rmtree(cold_dir, ignore_errors=True)
            if self.s.profile and size == min(self.s.sizes):
                profiled, _ = self._engine(config, cold_dir)
                self.profiles[f"ingestion (precache), paper, {size}x{size}, 1 document"] = self._profile(
                    lambda: profiled.precache(fresh[:1], progress=False)
                )
                profiled.store.close()
                shutil.rmtree(cold_dir, ignore_errors=True)
        shutil.rmtree(directory, ignore_errors=True)

    def _side_of_query(self) -> SideContent:
        return SideContent(self.query.text)

    def _rerank_fresh(self, config: RerankConfig, directory: Path, batch: list[Candidate]) -> object:
        """The query over ``batch`` by an engine over a fresh store object on ``directory``."""
        return self._engine(config, directory)[0].rerank(self.query, batch)

    def _importances(
        self, image: PreparedImage, features: Features, layers: int | None, out: list[torch.Tensor]
    ) -> None:
        """The pruning guide's importance of ``image`` at depth ``layers`` (its vision features given), into ``out``."""
        out.extend(embedder_importances(self.backbone, [image], lambda _bb, _im: features, layers))

    # -- ingestion stages ---------------------------------------------------------------------------

    def ingestion_stages(self, size: int, candidate: Candidate) -> None:
        """Where ingestion time goes: vision encoder, pruning importance (per guide depth), prefix pass."""
        b = self.backbone
        side = self._side(candidate)
        image = side.images[0]
        feats: dict[str, Features] = {}
        seconds_vision, _ = self.timed(lambda: feats.setdefault("f", b.encode_images([image])[0]))
        row: dict[str, object] = {"image_size": size, "image_tokens": image.num_tokens, "vision_s": seconds_vision}
        dense = self._dense_per_pair.get(("text->image", size))
        if dense:  # the floor of any ingestion: a dense pair runs the same vision encoder over the same page
            row["vision_vs_dense_pair"] = seconds_vision / dense
        importance = None
        default = RerankConfig().pruning_guide_layers
        for layers in self.s.guide_layers if self.detailed(size) else (default,):
            out: list[torch.Tensor] = []
            seconds, _ = self.timed(partial(self._importances, image, feats["f"], layers, out))
            row[f"importance_{layers or 'all'}_layers_s"] = seconds
            if layers == RerankConfig().pruning_guide_layers:
                importance = out[0]
        paper = self.config("paper")
        engine = MiniReranker(b, paper)
        _, prefix = engine.document_prefix(side)
        states = b.embed(prefix, {image.digest: feats["f"]})
        if importance is not None:
            states = states.select(keep_mask(prefix, states.visual, {image.digest: importance}, paper.keep_ratio))
        assert paper.band is not None, "the paper preset has a band"
        band = paper.band
        seconds, _ = self.timed(lambda: compute_prefix(b, states, band))
        row["prefix_pass_s"] = seconds
        row["prefix_layers"] = paper.band[1] if paper.band else 0
        self.stages.append(row)
        logger.info("ingestion stages %s", row)

    # -- image query over text candidates -----------------------------------------------------------

    def image_query_rows(self, size: int) -> None:
        n = self.s.text_candidates
        query = Query(images=[page(10_000, size)])
        candidates = [Candidate(text=text_candidate(i)) for i in range(n)]
        q_side = self._side(Candidate(images=list(query.images)))
        pairs = [(q_side, SideContent(c.text)) for c in candidates]
        self.dense_rows("image->text", size, pairs, n)
        config = self.config("paper")
        directory = self.work / f"image-query-{size}"
        shutil.rmtree(directory, ignore_errors=True)
        for state in ("cold", "warm"):
            engine, store = self._engine(config, directory)
            seconds, memory = self.timed(partial(engine.rerank, query, candidates))
            self.add(
                workload="image->text",
                image_size=size,
                image_tokens=q_side.images[0].num_tokens,
                method="paper",
                state=state,
                n=n,
                pairs_timed=n,
                seconds_per_query=seconds,
                seconds_per_pair=seconds / n,
                peak_rss_bytes=memory.peak_rss,
                peak_gpu_bytes=memory.peak_gpu,
                store_bytes_read_per_pair=store.read_bytes / n if state == "warm" else None,
            )
            store.close()
        shutil.rmtree(directory, ignore_errors=True)

    # -- profiles -----------------------------------------------------------------------------------

    def _profile(self, fn: Callable[[], object], top: int = 16) -> str:
        """torch.profiler's operators by self time (where the time goes, operator by operator)."""
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.s.device.startswith("cuda") else [])
        with torch.no_grad(), profile(activities=activities) as prof:
            fn()
        sort = "self_cuda_time_total" if self.s.device.startswith("cuda") else "self_cpu_time_total"
        return prof.key_averages().table(sort_by=sort, row_limit=top, max_name_column_width=48)

    # -- the run ------------------------------------------------------------------------------------

    def run(self) -> dict:
        s = self.s
        for size in s.sizes:
            largest = max([*s.warm_n, s.large_n or 0])
            docs = [Candidate(images=[page(i, size)], id=f"page-{i}") for i in range(largest + s.ingest_docs)]
            pairs = [(self._side_of_query(), self._side(d)) for d in docs[: max(s.dense_pairs, s.dense_batch)]]
            self.dense_rows("text->image", size, pairs, max(s.warm_n))
            self.ingestion_stages(size, docs[-1])
            for method in s.methods if self.detailed(size) else [m for m in s.methods if m == "paper"]:
                self.engine_rows(size, docs, method)
            if s.instruction_in_prefix and "paper" in s.methods and self.detailed(size):
                self.engine_rows(size, docs, "paper", instruction_in_prefix=True)
        self.image_query_rows(min(s.sizes))
        return self.result()

    def result(self) -> dict:
        paper = RerankConfig.preset("paper", self.depth)
        return {
            "settings": self.s.model_dump(),
            "shape": {"name": self.s.shape, **SHAPES[self.s.shape].describe()},
            "paper_config": {"exit_layer": paper.exit_layer, "band": list(paper.band or ()), "keep": paper.keep_ratio},
            "guide_layers_default": paper.pruning_guide_layers,
            "machine": machine(self.s.device),
            "model_build_seconds": self.build_seconds,
            "query": self.query.text,
            "vocabulary": self.vocabulary,
            "query_tokens": len(self.tokenizer(" " + (self.query.text or ""), add_special_tokens=False)["input_ids"]),
            "notes": [
                "Random weights: speed depends on shapes and token counts, not on weight values.",
                "dense rows time `pairs_timed` pairs and scale per pair to N (scaled=true).",
                "cold rows with composed=true are ingestion per document + the warm pair (a cold query computes "
                "each missing prefix, then its pair); the paper cold row with composed=null is measured directly.",
                "warm stores beyond the ingested documents hold the computed entry under each document's key.",
                "configurations with identical prefixes (+band and +exit) share one ingestion measurement.",
                "ingestion_stages: where a cold document's time goes (vision encoder, pruning importance per guide "
                "depth, prefix pass to the band end), each stage timed alone.",
                f"warm store precision: {self.s.storage}; full KV is compared at the same precision.",
                *self.notes,
            ],
            "rows": self.rows,
            "ingestion_stages": self.stages,
            "profiles": self.profiles,
        }


def run_bench(settings: BenchSettings, on_row: Callable[[dict], None] | None = None) -> dict:
    """Run every row of ``settings`` and return the result (settings, machine, rows, stages, profiles)."""
    bench = Bench(settings, on_row)
    try:
        return bench.run()
    finally:
        if settings.work_dir is None:
            shutil.rmtree(bench.work, ignore_errors=True)


__all__ = ["ENGINE_METHODS", "ROW_FIELDS", "Bench", "BenchSettings", "run_bench", "write_outputs"]
