"""``minirerank precache PATH...``: fill a prefix store ahead of queries, in one process or on Ray."""

from __future__ import annotations

import argparse

from ..demo_model import DEMO_MODEL
from ._common import EXIT_FAILED, EXIT_OK, Subparsers, add_engine_options, fail, load_engine


def add_commands(commands: Subparsers) -> None:
    precache = commands.add_parser(
        "precache",
        help="compute and store the document prefixes of files, folders or JSONL dumps",
        description="Compute and store the document-side prefixes of a corpus, so that queries only read them. "
        "Resumable: documents already stored are skipped. PATH is an image or text file, a folder of them, or a "
        "JSONL file (this project's records, or LlamaIndex / LangChain document dumps). Prints a report; exits 1 "
        "if some documents failed (each is listed with its reason).",
    )
    precache.add_argument("paths", nargs="+", metavar="PATH", help="files, folders or JSONL files")
    precache.add_argument(
        "--model", default=DEMO_MODEL, help=f"a Qwen3-VL checkpoint (folder or hub id); default: {DEMO_MODEL}"
    )
    precache.add_argument(
        "--config",
        default=None,
        choices=["paper"],
        help="the preset; default: the configuration saved with the checkpoint, else paper",
    )
    add_engine_options(
        precache, store_required=True, device_help="torch device (without --ray; Ray actors use a GPU if any)"
    )
    precache.add_argument("--ray", action="store_true", help="run on a Ray cluster (RAY_ADDRESS, else a local one)")
    precache.add_argument("--workers", type=int, default=2, help="Ray actors, one loaded model each (with --ray)")
    precache.add_argument("--batch-size", type=int, default=8, help="documents per actor call (with --ray)")
    precache.add_argument("--no-progress", action="store_true", help="no progress bar")
    precache.set_defaults(handler=_precache)


def _precache(args: argparse.Namespace) -> int:
    from ..errors import MiniRerankError
    from ..scale import precache_documents, precache_on_ray, read_documents

    if args.workers < 1 or args.batch_size < 1:
        return fail(f"--workers ({args.workers}) and --batch-size ({args.batch_size}) must be >= 1")
    try:
        documents = read_documents(args.paths)
        if args.ray:
            report = precache_on_ray(
                documents,
                cache_url=args.cache_url,
                cache_dir=args.cache_dir,
                model=args.model,
                config=args.config,
                workers=args.workers,
                batch_size=args.batch_size,
                cache_storage=args.cache_storage,
                cache_namespace=args.cache_namespace,
                dtype=args.dtype,
                progress=not args.no_progress,
            )
        else:
            engine = load_engine(args, cache_memory_limit=0)  # ingestion never reads its entries back
            report = precache_documents(engine, documents, progress=not args.no_progress)
    except MiniRerankError as exc:
        return fail(exc)
    print(report.summary())
    return EXIT_FAILED if report.failures else EXIT_OK
