"""``minirerank bench``: the engine against the dense baselines at a real model shape, in one run.

Writes ``bench.json`` (every row, the machine, ingestion stages, profiles), ``profile.txt`` and the PNG plots
under ``--out``, and prints the rows with their ratio to dense-official and the targets' verdicts.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ._common import EXIT_OK, STORAGES, Subparsers, fail


def add_commands(commands: Subparsers) -> None:
    from ..bench.shapes import SHAPES

    parser = commands.add_parser(
        "bench",
        help="time dense vs the engine (cold and warm) on a random-weight model of a real shape",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--shape", default="small", choices=sorted(SHAPES), help="model shape (default: small)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256], help="page sides in pixels")
    parser.add_argument("--warm-n", type=int, nargs="+", default=[1, 10, 100], help="documents per query")
    parser.add_argument("--large-n", type=int, default=None, help="an extra warm N for paper, smallest size")
    parser.add_argument("--dense-pairs", type=int, default=1, help="pairs timed for dense-official (scaled)")
    parser.add_argument("--dense-batch", type=int, default=2, help="pairs in the dense-batched forward")
    parser.add_argument("--ingest-docs", type=int, default=1, help="documents ingested per configuration")
    parser.add_argument("--text-candidates", type=int, default=10, help="N of the image query over text")
    parser.add_argument("--full-kv-max-n", type=int, default=10, help="largest warm N of vision-first alone")
    parser.add_argument("--storage", default="bfloat16", choices=STORAGES)
    parser.add_argument(
        "--vocabulary",
        default="auto",
        choices=["auto", "qwen", "workload"],
        help="tokenizer: Qwen's real vocabulary (needs the dev extra's ranks), a stand-in, or Qwen's when installed",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument(
        "--guide-layers",
        nargs="+",
        default=["1", "2", "4", "all"],
        help="pruning-guide depths whose ingestion stage is timed ('all': the full-depth guide)",
    )
    parser.add_argument(
        "--detail-sizes",
        type=int,
        nargs="+",
        default=None,
        help="sizes where every method is measured (default: all); elsewhere dense-official and paper only",
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the warm/cold profiles")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib needed)")
    parser.add_argument("--no-instruction-row", action="store_true", help="skip paper with the instruction cached")
    parser.add_argument("--work-dir", default=None, help="where the disk stores live (default: a temp dir)")
    parser.add_argument("--out", default="bench-out", help="output directory (default: bench-out)")
    parser.set_defaults(handler=_bench)


def _bench(args: argparse.Namespace) -> int:
    from ..bench import BenchSettings, run_bench, write_outputs
    from ..bench.report import summary

    if min(args.sizes) < 32 or min(args.warm_n) < 1 or args.dense_pairs < 1 or args.dense_batch < 1:
        return fail("--sizes must be >= 32 pixels and every count >= 1")
    settings = BenchSettings(
        shape=args.shape,
        sizes=tuple(args.sizes),
        warm_n=tuple(sorted(args.warm_n)),
        large_n=args.large_n,
        dense_pairs=args.dense_pairs,
        dense_batch=args.dense_batch,
        ingest_docs=args.ingest_docs,
        text_candidates=args.text_candidates,
        full_kv_max_n=args.full_kv_max_n,
        storage=args.storage,
        vocabulary=args.vocabulary,
        guide_layers=tuple(None if g == "all" else int(g) for g in args.guide_layers),
        device=args.device,
        dtype=args.dtype,
        instruction_in_prefix=not args.no_instruction_row,
        profile=not args.no_profile,
        work_dir=args.work_dir,
        detail_sizes=tuple(args.detail_sizes) if args.detail_sizes else None,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    partial = out / "bench.partial.jsonl"
    partial.write_text("", encoding="utf-8")

    def on_row(row: dict) -> None:  # a long run leaves its rows behind even if stopped
        with partial.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    try:
        result = run_bench(settings, on_row)
        paths = write_outputs(result, out, plots=not args.no_plots)
    except (ValueError, ImportError, OSError) as exc:
        return fail(exc)
    partial.unlink(missing_ok=True)
    print(summary(result))
    print("wrote " + ", ".join(str(p) for p in paths))
    return EXIT_OK
