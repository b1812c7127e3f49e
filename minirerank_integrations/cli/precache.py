"""``minirerank precache PATH...``: fill a prefix store ahead of queries, in one process or on Ray."""

from __future__ import annotations

import argparse

from ..demo_model import DEMO_MODEL
from ._common import EXIT_FAILED, EXIT_OK, Subparsers, fail


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
    store = precache.add_mutually_exclusive_group(required=True)
    store.add_argument("--cache-dir", metavar="DIR", help="a prefix cache directory")
    store.add_argument(
        "--cache-url",
        metavar="URL",
        help="a Redis or Valkey server, redis://host:6379/0 or rediss://; password in the URL or "
        "$MINIRERANK_REDIS_PASSWORD",
    )
    precache.add_argument("--cache-namespace", default="minirerank", help="prefix of the Redis keys")
    precache.add_argument(
        "--cache-storage", default="float32", choices=["float32", "float16", "bfloat16", "int8"], help="precision"
    )
    precache.add_argument("--ray", action="store_true", help="run on a Ray cluster (RAY_ADDRESS, else a local one)")
    precache.add_argument("--workers", type=int, default=2, help="Ray actors, one loaded model each (with --ray)")
    precache.add_argument("--batch-size", type=int, default=8, help="documents per actor call (with --ray)")
    precache.add_argument("--device", default="cpu", help="torch device (without --ray; Ray actors use a GPU if any)")
    precache.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
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
            from ..engine.reranker import MiniReranker

            engine = MiniReranker.from_pretrained(
                args.model,
                config=args.config,
                device=args.device,
                dtype=args.dtype,
                cache_dir=args.cache_dir,
                cache_url=args.cache_url,
                cache_namespace=args.cache_namespace,
                cache_storage=args.cache_storage,
                cache_memory_limit=0,  # ingestion never reads its entries back
            )
            report = precache_documents(engine, documents, progress=not args.no_progress)
    except MiniRerankError as exc:
        return fail(exc)
    print(report.summary())
    return EXIT_FAILED if report.failures else EXIT_OK
