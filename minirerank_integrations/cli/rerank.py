"""``minirerank rerank``: one query against text and image candidates, JSON lines best first."""

from __future__ import annotations

import argparse

from ..demo_model import DEMO_MODEL
from ._common import EXIT_OK, Subparsers, fail


def add_commands(commands: Subparsers) -> None:
    rerank = commands.add_parser(
        "rerank",
        help="rerank text and image candidates for one query; prints JSON lines, best first",
        description="Rerank candidates for one query. Each --text or --image is one candidate.",
    )
    rerank.add_argument(
        "--model", default=DEMO_MODEL, help=f"a Qwen3-VL checkpoint (folder or hub id); default: {DEMO_MODEL}, embedded"
    )
    rerank.add_argument("--query", default="", help="the query text")
    rerank.add_argument("--query-image", action="append", default=[], metavar="PATH", help="a query image")
    rerank.add_argument("--text", action="append", default=[], help="a text candidate (repeatable)")
    rerank.add_argument("--image", action="append", default=[], metavar="PATH", help="an image candidate")
    rerank.add_argument(
        "--config",
        default=None,
        choices=["paper", "dense"],
        help="the preset; default: the configuration saved with the checkpoint, else paper",
    )
    rerank.add_argument("--top-n", type=int, default=None)
    store = rerank.add_mutually_exclusive_group()
    store.add_argument("--cache-dir", default=None, help="a persistent prefix cache directory")
    store.add_argument("--cache-url", default=None, help="a shared Redis prefix store, redis://host:6379/0")
    rerank.add_argument("--device", default="cpu")
    rerank.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    rerank.set_defaults(handler=_rerank)


def _rerank(args: argparse.Namespace) -> int:
    import json

    from ..engine.inputs import Candidate, Query
    from ..engine.reranker import MiniReranker
    from ..errors import MiniRerankError

    if not args.text and not args.image:
        return fail("no candidates: give at least one --text or --image")
    try:
        candidates = [Candidate(text=t, id=f"text:{i}") for i, t in enumerate(args.text)]
        candidates += [Candidate(images=[p], id=p) for p in args.image]
        reranker = MiniReranker.from_pretrained(
            args.model,
            config=args.config,
            device=args.device,
            dtype=args.dtype,
            cache_dir=args.cache_dir,
            cache_url=args.cache_url,
        )
        results = reranker.rerank(Query(text=args.query, images=args.query_image), candidates, top_n=args.top_n)
    except MiniRerankError as exc:
        return fail(exc)
    for result in results:
        print(json.dumps({"index": result.index, "id": result.id, "score": result.score}))
    return EXIT_OK
