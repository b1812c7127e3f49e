"""``minirerank rerank``: one query against text, image, PDF-page and video candidates; JSON lines best first, or
one JSON document with ``--json``."""

from __future__ import annotations

import argparse
import importlib
import warnings
from typing import TYPE_CHECKING

from ..demo_model import DEMO_MODEL
from ._common import EXIT_OK, Subparsers, add_engine_options, fail, load_engine

if TYPE_CHECKING:
    from ..engine.inputs import Candidate

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C

#: How to get PyAV, which decodes video files.
VIDEO_EXTRA_HINT = "pip install 'minirerank-integrations[video]'"


def add_commands(commands: Subparsers) -> None:
    rerank = commands.add_parser(
        "rerank",
        help="rerank text, image, PDF-page and video candidates for one query; prints JSON lines, best first",
        description="Rerank candidates for one query. Each --text, --image or --video is one candidate, and each "
        "page of a --pdf file. Prints one JSON object per result, best first ({index, id, score}), or with --json "
        f"one JSON document. Videos need the video extra ({VIDEO_EXTRA_HINT}).",
    )
    rerank.add_argument(
        "--model", default=DEMO_MODEL, help=f"a Qwen3-VL checkpoint (folder or hub id); default: {DEMO_MODEL}, embedded"
    )
    rerank.add_argument("--query", default="", help="the query text")
    rerank.add_argument("--query-image", action="append", default=[], metavar="PATH", help="a query image")
    rerank.add_argument(
        "--query-video", action="append", default=[], metavar="PATH", help="a query video file (repeatable)"
    )
    rerank.add_argument("--text", action="append", default=[], help="a text candidate (repeatable)")
    rerank.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="PATH",
        help="an image candidate (repeatable); 'file.pdf#page=N' names one PDF page, counted from 1",
    )
    rerank.add_argument(
        "--pdf", action="append", default=[], metavar="PATH", help="a PDF file: every page is a candidate (repeatable)"
    )
    rerank.add_argument(
        "--video",
        action="append",
        default=[],
        metavar="PATH",
        help="a video candidate (repeatable): a file (mp4, webm, ...), sampled as the official reranker samples it",
    )
    rerank.add_argument(
        "--config",
        default=None,
        choices=["paper", "dense"],
        help="the preset; default: the configuration saved with the checkpoint, else paper",
    )
    rerank.add_argument("--top-n", type=int, default=None, metavar="N", help="print the best N only")
    rerank.add_argument(
        "--json",
        action="store_true",
        help="print one JSON document: the model, the configuration, the query, the ranked results, the "
        "skipped candidates and how many prefixes the store served",
    )
    rerank.add_argument(
        "--skip-bad", action="store_true", help="leave out unreadable candidates (listed as skipped) instead of failing"
    )
    add_engine_options(rerank, store_required=False, device_help="where the model runs, e.g. cpu, cuda, cuda:1")
    rerank.set_defaults(handler=_rerank)


def _rerank(args: argparse.Namespace) -> int:
    import json

    from ..engine.inputs import Candidate, OnError, Query
    from ..errors import MiniRerankError

    try:
        candidates = [Candidate(text=t, id=f"text:{i}") for i, t in enumerate(args.text)]
        candidates += [Candidate(images=[p], id=p) for p in args.image]
        query = Query(text=args.query, images=args.query_image, videos=args.query_video)
        candidates += _pdf_candidates(args.pdf, skip_bad=args.skip_bad)
        candidates += [Candidate(videos=[p], id=p) for p in args.video]
        if not candidates:
            return fail("no candidates: pass --text, --image, --pdf or --video")
        if args.video or args.query_video:
            _require_video_extra()  # before the model loads: the answer is the same, seconds sooner
        reranker = load_engine(args)
        on_error: OnError = "skip" if args.skip_bad else "raise"
        results = reranker.rerank(query, candidates, top_n=args.top_n, on_error=on_error)
    except MiniRerankError as exc:
        return fail(exc)
    except KeyboardInterrupt:
        return fail("interrupted", EXIT_INTERRUPTED)
    rows = [{"rank": rank, "index": r.index, "id": r.id, "score": r.score} for rank, r in enumerate(results, 1)]
    if not args.json:
        for row in rows:
            print(json.dumps({key: row[key] for key in ("index", "id", "score")}))
        return EXIT_OK
    document = {
        "model": str(args.model),
        "config": reranker.config.model_dump(mode="json"),
        "query": {
            "text": query.text,
            "images": [str(image) for image in query.images],
            "videos": [str(video) for video in query.videos],
        },
        "candidates": len(candidates),
        "results": rows,
        "skipped": [{"index": s.index, "id": s.id, "error": s.error} for s in results.skipped],
        "prefixes": {"served": reranker.counters.prefix_hits, "computed": reranker.counters.prefix_computations},
    }
    print(json.dumps(document, indent=2))
    return EXIT_OK


def _pdf_candidates(paths: list[str], *, skip_bad: bool) -> list[Candidate]:
    """One candidate per page of each PDF; with ``skip_bad`` an unreadable PDF is left out with a one-line
    warning (the other candidates are still ranked), else its error stops the command."""
    from ..engine.inputs import Candidate
    from ..engine.pdf import pdf_pages
    from ..errors import MiniRerankError

    candidates = []
    for path in paths:
        try:
            pages = pdf_pages(path)
        except MiniRerankError as exc:
            if not skip_bad:
                raise
            named = str(path) in str(exc)  # the error names the file as a rule: not twice
            warnings.warn(f"skipped the PDF: {exc}" if named else f"skipped the PDF {path}: {exc}", stacklevel=2)
            continue
        candidates += [Candidate(images=[page], id=str(page)) for page in pages]
    return candidates


def _require_video_extra() -> None:
    """:class:`MissingExtraError` naming the extra when PyAV, which decodes video files, cannot be imported."""
    from ..errors import MissingExtraError

    try:
        importlib.import_module("av")
    except ImportError as exc:
        raise MissingExtraError(
            f"video files need PyAV, which is not installed ({exc}); install the video extra: {VIDEO_EXTRA_HINT}"
        ) from exc
