"""``minirerank precache PATH...``: fill a prefix store ahead of queries, in one process or on Ray."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..demo_model import DEMO_MODEL
from ._common import EXIT_FAILED, EXIT_OK, Subparsers, add_engine_options, fail, load_engine, store_config

if TYPE_CHECKING:  # the commands import the engine when they run, so that --help stays fast
    from ..engine.inputs import Candidate
    from ..engine.reranker import MiniReranker
    from ..scale.documents import UnreadableDocument
    from ..scale.report import IngestReport

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C


def add_commands(commands: Subparsers) -> None:
    precache = commands.add_parser(
        "precache",
        help="compute and store the document prefixes of files, folders or JSONL dumps",
        description="Compute and store the document-side prefixes of a corpus, so that queries only read them. "
        "Resumable: documents already stored are skipped. PATH is an image or text file, a folder of them, or a "
        "JSONL file (this project's records, or LlamaIndex / LangChain document dumps). Prints a report; exits 1 "
        "if some documents failed (each is listed with its reason), 130 when interrupted (what was stored is "
        "kept).",
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
    precache.add_argument(
        "--max-file-bytes",
        type=int,
        default=None,
        metavar="BYTES",
        help="largest text or JSONL file read; a larger one is reported as a failed document (default: the "
        "reader's, 256 MiB)",
    )
    precache.add_argument("--no-progress", action="store_true", help="no progress bar")
    precache.set_defaults(handler=_precache)


def _precache(args: argparse.Namespace) -> int:
    from ..engine.inputs import Candidate
    from ..errors import MiniRerankError
    from ..scale import precache_documents, precache_on_ray
    from ..scale.documents import read_corpus

    if args.workers < 1 or args.batch_size < 1:
        return fail(f"--workers ({args.workers}) and --batch-size ({args.batch_size}) must be >= 1")
    engine = None
    try:
        cap = {} if args.max_file_bytes is None else {"max_file_bytes": args.max_file_bytes}
        corpus = read_corpus(args.paths, **cap)
        # A document file that cannot be read fails alone: the others are stored, it is reported.
        positions = [position for position, document in enumerate(corpus) if isinstance(document, Candidate)]
        documents = [document for document in corpus if isinstance(document, Candidate)]  # in positions' order
        if args.ray:
            report = precache_on_ray(
                documents,
                store=store_config(args),  # every --cache-* option, checked before Ray starts
                model=args.model,
                config=args.config,
                workers=args.workers,
                batch_size=args.batch_size,
                dtype=args.dtype,
                progress=not args.no_progress,
            )
        else:
            engine = load_engine(args, cache_memory_limit=0)  # ingestion never reads its entries back
            report = precache_documents(engine, documents, progress=not args.no_progress)
    except MiniRerankError as exc:
        return fail(exc)
    except KeyboardInterrupt:
        return fail(_interrupted(engine, ray=args.ray), EXIT_INTERRUPTED)
    report = _with_unreadable(report, corpus, positions)
    print(report.summary())
    return EXIT_FAILED if report.failures else EXIT_OK


def _with_unreadable(
    report: IngestReport, corpus: list[Candidate | UnreadableDocument], positions: list[int]
) -> IngestReport:
    """``report`` (over the readable documents) with the unreadable ones as failures, in corpus order."""
    from dataclasses import replace

    from ..scale.documents import UnreadableDocument
    from ..scale.report import Failure

    failures = [Failure(positions[f.position], f.id, f.reason) for f in report.failures]
    failures += [
        Failure(position, document.id, str(document.error))
        for position, document in enumerate(corpus)
        if isinstance(document, UnreadableDocument)
    ]
    failures.sort(key=lambda failure: failure.position)
    return replace(report, documents=len(corpus), failures=failures)


def _interrupted(engine: MiniReranker | None, *, ray: bool) -> str:
    """One line for an interrupted run: what this run stored (kept, and skipped when it runs again)."""
    resume = "run the same command again to resume (stored documents are skipped)"
    if ray:  # the actors' counts die with them; what they stored is in the store
        return f"interrupted; what the Ray workers stored is kept; {resume}"
    if engine is None:  # still reading the documents or loading the model
        return "interrupted before any document was stored"
    stats = engine.store.stats
    return (
        f"interrupted after storing {stats.writes} document prefix{'es' if stats.writes != 1 else ''} "
        f"({stats.bytes_written / 2**20:.1f} MiB); {resume}"
    )
