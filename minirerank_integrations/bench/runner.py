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
import os
import platform
import resource
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..engine.config import RerankConfig
from ..engine.images import image_digest, prepare_image
from ..engine.inputs import Candidate, Query, as_candidate
from ..engine.layers import compute_prefix
from ..engine.prompts import SideContent, query_first_segment
from ..engine.pruning import embedder_importances, keep_mask
from ..engine.reranker import MiniReranker
from ..store import DiskPrefixStore, PrefixEntry, PrefixStore, StoreStats
from ..store.codec import encode_entry
from ..tiny_checkpoint import build_image_processor
from .shapes import SHAPES, random_backbone
from .workload import QUERIES, bench_tokenizer, page, text_candidate

logger = logging.getLogger(__name__)

#: The key measured blobs are bound to: a key is 64 hex digits, so the size is that of a real entry.
_SIZE_KEY = "0" * 64

#: The fields every row of ``rows`` carries (None where a field does not apply).
ROW_FIELDS = (
    "workload",
    "image_size",
    "image_tokens",
    "method",
    "state",
    "n",
    "pairs_timed",
    "scaled",
    "composed",
    "seconds_per_query",
    "seconds_per_pair",
    "ratio_to_dense_official",
    "peak_rss_bytes",
    "peak_gpu_bytes",
    "store_bytes_read_per_pair",
    "store_read_mb_per_s",
    "ingestion_docs_per_s",
    "stored_bytes_per_doc",
    "stored_bytes_per_doc_int8",
    "band_read_bytes_per_doc",
    "full_kv_bytes_per_doc",
    "stored_vs_full_kv",
    "prefix_tokens",
    "suffix_tokens",
)
ENGINE_METHODS = ("vision-first", "+band", "+exit", "paper")


@dataclass
class BenchSettings:
    """What one ``minirerank bench`` run measures; the defaults are a quick run on the small shape."""

    shape: str = "small"
    sizes: tuple[int, ...] = (128, 256)
    warm_n: tuple[int, ...] = (1, 10, 100)
    large_n: int | None = None  # an extra warm N for ``paper`` at the smallest size (e.g. 1000)
    dense_pairs: int = 1
    dense_batch: int = 2
    ingest_docs: int = 1
    text_candidates: int = 10
    full_kv_max_n: int = 10  # vision-first stores every layer of every token: warm N capped here
    methods: tuple[str, ...] = ENGINE_METHODS
    storage: str = "bfloat16"
    device: str = "cpu"
    dtype: str = "float32"
    guide_layers: tuple[int | None, ...] = (1, 2, 4, None)  # ingestion stage options measured
    instruction_in_prefix: bool = True  # also time paper with the instruction moved into the prefix
    profile: bool = True
    #: sizes where everything is measured (None: all); elsewhere only dense-official, ``paper`` and its stages
    #: with the default guide (a CPU run's budget goes to the rows its targets read)
    detail_sizes: tuple[int, ...] | None = None
    work_dir: str | None = None  # where the disk stores live (deleted after each method)
    #: "qwen": Qwen's real vocabulary (the dev extra has its ranks); "workload": a stand-in whose workload words
    #: are single tokens; "auto": Qwen's when installed. The result names the one used.
    vocabulary: str = "auto"
    seed: int = 0


class CountingStore(PrefixStore):
    """A store wrapper that counts what reads return and how long they take (bytes as stored on disk)."""

    def __init__(self, inner: PrefixStore, stored_bytes: Callable[[PrefixEntry], int]) -> None:
        self.inner = inner
        self._stored_bytes = stored_bytes
        self.read_bytes = 0
        self.read_seconds = 0.0
        self.reads = 0

    @property
    def stats(self) -> StoreStats:  # type: ignore[override]
        return self.inner.stats

    def get(self, key: str) -> PrefixEntry | None:
        start = time.perf_counter()
        entry = self.inner.get(key)
        self.read_seconds += time.perf_counter() - start
        if entry is not None:
            self.reads += 1
            self.read_bytes += self._stored_bytes(entry)
        return entry

    def put(self, key: str, entry: PrefixEntry) -> None:
        self.inner.put(key, entry)

    def __contains__(self, key: object) -> bool:
        return key in self.inner

    def close(self) -> None:
        self.inner.close()


class PeakMemory:
    """Peak resident memory (and GPU memory on CUDA) while a block runs, sampled every 20 ms.

    GPU memory is read on ``device`` itself ("cuda:1" is not the current device unless made so)."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.device = torch.device(device)
        self.peak_rss = 0
        self.peak_gpu: int | None = None

    @staticmethod
    def rss() -> int:
        try:
            with open("/proc/self/statm", encoding="ascii") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):  # not Linux: the process's lifetime peak
            scale = 1 if platform.system() == "Darwin" else 1024
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale

    @contextmanager
    def measure(self) -> Iterator[PeakMemory]:
        stop = threading.Event()
        self.peak_rss = self.rss()

        def sample() -> None:
            while not stop.wait(0.02):
                self.peak_rss = max(self.peak_rss, self.rss())

        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()
            self.peak_rss = max(self.peak_rss, self.rss())
            if self.cuda:
                self.peak_gpu = torch.cuda.max_memory_allocated(self.device)


def _sync(device: str) -> None:
    """Wait for ``device``'s queued work (the device asked for, not the current one) before reading a clock."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


class Bench:
    """One run: the model, the inputs, and the rows measured so far (written out after every row)."""

    def __init__(self, settings: BenchSettings, on_row: Callable[[dict], None] | None = None) -> None:
        if settings.shape not in SHAPES:
            raise ValueError(f"unknown shape {settings.shape!r}; choose one of {sorted(SHAPES)}")
        unknown = set(settings.methods) - set(ENGINE_METHODS)
        if unknown:
            raise ValueError(f"unknown methods {sorted(unknown)}; choose from {ENGINE_METHODS}")
        self.s = settings
        self.on_row = on_row
        self.rows: list[dict] = []
        self.profiles: dict[str, str] = {}
        self.stages: list[dict] = []
        self.notes: list[str] = []
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[settings.dtype]
        started = time.perf_counter()
        self.tokenizer, self.vocabulary = bench_tokenizer(settings.vocabulary)
        self.backbone = random_backbone(
            settings.shape, self.tokenizer, build_image_processor(), device=settings.device, dtype=dtype
        )
        self.build_seconds = time.perf_counter() - started
        self.depth = self.backbone.num_layers
        self.query = Query(text=QUERIES[0])
        self.memory = PeakMemory(settings.device)
        self.work = Path(settings.work_dir or tempfile.mkdtemp(prefix="minirerank-bench-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self._dense_per_pair: dict[tuple[str, int], float] = {}
        self._ingested: dict[tuple, tuple[float, PeakMemory, PrefixEntry]] = {}

    # -- configurations -----------------------------------------------------------------------------

    def config(self, method: str, **extra: object) -> RerankConfig:
        paper = RerankConfig.preset("paper", self.depth)
        fields: dict[str, object] = {
            "vision-first": {"format": "vision_first"},
            "+band": {"format": "vision_first", "band": paper.band},
            "+exit": {"format": "vision_first", "band": paper.band, "exit_layer": paper.exit_layer},
            "paper": paper.model_dump(),
        }[method]
        return RerankConfig(**{**fields, **extra}).resolve(self.depth)  # type: ignore[arg-type]

    # -- rows ---------------------------------------------------------------------------------------

    def add(self, **row: object) -> dict:
        full = {name: row.get(name) for name in ROW_FIELDS}
        extra = set(row) - set(ROW_FIELDS)
        if extra:
            raise ValueError(f"unknown row fields {sorted(extra)}")
        dense = self._dense_per_pair.get((str(full["workload"]), int(full["image_size"] or 0)))
        if dense and full["seconds_per_pair"] is not None:
            full["ratio_to_dense_official"] = float(full["seconds_per_pair"]) / dense  # type: ignore[arg-type]
        self.rows.append(full)
        logger.info("row %s", json.dumps(full))
        if self.on_row is not None:
            self.on_row(full)
        return full

    def timed(self, fn: Callable[[], object]) -> tuple[float, PeakMemory]:
        memory = PeakMemory(self.s.device)
        with torch.no_grad(), memory.measure():
            _sync(self.s.device)
            start = time.perf_counter()
            fn()
            _sync(self.s.device)
            seconds = time.perf_counter() - start
        return seconds, memory

    # -- dense baselines ----------------------------------------------------------------------------

    def _official_inputs(self, pairs: list[tuple[SideContent, SideContent]]) -> dict[str, torch.Tensor]:
        """The official prompt of each pair, left-padded into one batch, as ``Qwen3VLModel`` takes it."""
        b = self.backbone
        segments = [
            query_first_segment(
                b.tokenizer, q, d, RerankConfig().instruction, max_length=10240, special_ids=b.special_ids
            )
            for q, d in pairs
        ]
        longest = max(len(s.input_ids) for s in segments)
        pad = b.tokenizer.pad_token_id
        ids = torch.full((len(segments), longest), pad, dtype=torch.long)
        mask = torch.zeros(len(segments), longest, dtype=torch.long)
        for row, segment in enumerate(segments):
            n = len(segment.input_ids)
            ids[row, longest - n :] = torch.tensor(segment.input_ids)
            mask[row, longest - n :] = 1
        inputs: dict[str, torch.Tensor] = {"input_ids": ids, "attention_mask": mask}
        images = [im.image for s in segments for im in s.images]
        if images:
            out = b.image_processor(images=images, do_resize=False, return_tensors="pt")
            inputs["pixel_values"] = out["pixel_values"].to(b.visual.dtype)
            inputs["image_grid_thw"] = out["image_grid_thw"]
            inputs["mm_token_type_ids"] = (ids == b.image_token_id).long()
        return {k: v.to(b.device) for k, v in inputs.items()}

    def official_scores(self, pairs: list[tuple[SideContent, SideContent]]) -> torch.Tensor:
        """sigmoid(logit yes - logit no) of the last token, from the plain transformers forward."""
        b = self.backbone
        inputs = self._official_inputs(pairs)
        hidden = b.model.model(**inputs).last_hidden_state[:, -1]  # the model's final norm already applied
        return torch.sigmoid(hidden.float() @ b.score_vector().to(hidden.device))

    def detailed(self, size: int) -> bool:
        return self.s.detail_sizes is None or size in self.s.detail_sizes

    def dense_rows(self, workload: str, size: int, pairs: list[tuple[SideContent, SideContent]], n: int) -> None:
        timed = pairs[: self.s.dense_pairs]
        seconds, memory = self.timed(lambda: [self.official_scores([p]) for p in timed])
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
        seconds, memory = self.timed(lambda: self.official_scores(batch))
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
        disk = DiskPrefixStore(directory, storage=self.s.storage, size_limit=2**40)  # type: ignore[arg-type]
        sizes: dict[tuple, int] = {}

        def stored(entry: PrefixEntry) -> int:  # every entry of a shape encodes to the same size
            shape = (tuple(entry.keys.shape), entry.length)
            if shape not in sizes:
                sizes[shape] = len(encode_entry(entry, key=_SIZE_KEY, storage=self.s.storage))  # type: ignore[arg-type]
            return sizes[shape]

        store = CountingStore(disk, stored)
        return MiniReranker(self.backbone, config, store=store), store

    def _doc_key(self, engine: MiniReranker, candidate: Candidate) -> str:
        side = engine.prepare(as_candidate(candidate), "a benchmark document")
        return engine.document_prefix(side)[0]

    def _sizes(self, engine: MiniReranker, entry: PrefixEntry, prefix_tokens: int) -> dict[str, object]:
        shape = SHAPES[self.s.shape]
        element = torch.empty(0, dtype=getattr(torch, self.s.storage)).element_size()
        stored = len(encode_entry(entry, key=_SIZE_KEY, storage=self.s.storage))  # type: ignore[arg-type]
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
            entry = store.inner.get(key)
            assert entry is not None
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
            seconds, memory = self.timed(lambda warm=warm, subset=subset: warm.rerank(self.query, subset))
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
                    lambda batch=batch: self._engine(config, directory)[0].rerank(self.query, batch)
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

    # -- ingestion stages ---------------------------------------------------------------------------

    def ingestion_stages(self, size: int, candidate: Candidate) -> None:
        """Where ingestion time goes: vision encoder, pruning importance (per guide depth), prefix pass."""
        b = self.backbone
        side = self._side(candidate)
        image = side.images[0]
        feats: dict = {}
        seconds_vision, _ = self.timed(lambda: feats.setdefault("f", b.encode_images([image])[0]))
        row: dict[str, object] = {"image_size": size, "image_tokens": image.num_tokens, "vision_s": seconds_vision}
        dense = self._dense_per_pair.get(("text->image", size))
        if dense:  # the floor of any ingestion: a dense pair runs the same vision encoder over the same page
            row["vision_vs_dense_pair"] = seconds_vision / dense
        importance = None
        default = RerankConfig().pruning_guide_layers
        for layers in self.s.guide_layers if self.detailed(size) else (default,):
            out: list = []
            seconds, _ = self.timed(
                lambda layers=layers, out=out: out.extend(
                    embedder_importances(b, [image], lambda _bb, _im: feats["f"], layers)
                )
            )
            row[f"importance_{layers or 'all'}_layers_s"] = seconds
            if layers == RerankConfig().pruning_guide_layers:
                importance = out[0]
        paper = self.config("paper")
        engine = MiniReranker(b, paper)
        _, prefix = engine.document_prefix(side)
        states = b.embed(prefix, {image.digest: feats["f"]})
        if importance is not None:
            states = states.select(keep_mask(prefix, states.visual, {image.digest: importance}, paper.keep_ratio))
        seconds, _ = self.timed(lambda: compute_prefix(b, states, paper.band))
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
            seconds, memory = self.timed(lambda engine=engine: engine.rerank(query, candidates))
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
            "settings": asdict(self.s),
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


def machine(device: str | None = None) -> dict:
    """Where a run ran; ``cuda`` names ``device`` when it is a CUDA device (else the first one, if any)."""
    cuda = torch.device(device) if device is not None and device.startswith("cuda") else None
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(cuda or 0) if torch.cuda.is_available() else None,
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        info["cpu"] = names[0] if names else info["cpu"]
        load = os.getloadavg()
        info["load_average_at_end"] = [round(x, 2) for x in load]
    except OSError:
        pass
    return info


def run_bench(settings: BenchSettings, on_row: Callable[[dict], None] | None = None) -> dict:
    """Run every row of ``settings`` and return the result (settings, machine, rows, stages, profiles)."""
    bench = Bench(settings, on_row)
    try:
        return bench.run()
    finally:
        if settings.work_dir is None:
            shutil.rmtree(bench.work, ignore_errors=True)


def write_outputs(result: dict, out_dir: str | Path, *, plots: bool = True) -> list[Path]:
    """``bench.json``, ``profile.txt`` and (with matplotlib) the PNG plots; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "bench.json", out / "profile.txt"]
    written[0].write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    written[1].write_text(
        "\n\n".join(f"== {name} ==\n{text}" for name, text in result["profiles"].items()) + "\n", encoding="utf-8"
    )
    if plots:
        from .plots import plot_all

        written.extend(plot_all(result, out))
    return written


__all__ = ["ROW_FIELDS", "BenchSettings", "run_bench", "write_outputs"]
