"""``minirerank serve``: the engine as an HTTP rerank service (needs the ``serve`` extra: fastapi, uvicorn,
prometheus-client, httpx). SIGTERM or Ctrl-C stops accepting, lets the requests in flight finish, then exits."""

from __future__ import annotations

import argparse

from ..demo_model import DEMO_MODEL
from ._common import EXIT_OK, Subparsers, add_engine_options, fail, load_engine


def add_commands(commands: Subparsers) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve /v1/rerank, /v2/rerank, /v1/score, /v1/precache, /v1/models, /health and /metrics over HTTP",
        description="Serve the reranker over HTTP in the rerank API vLLM, Cohere and Jina clients use. Requests "
        "arriving within --batch-wait-ms of each other are scored together. /health answers 503 until the model "
        "is loaded.",
    )
    serve.add_argument(
        "--model", default=DEMO_MODEL, help=f"a Qwen3-VL checkpoint or adapted folder; default: {DEMO_MODEL}"
    )
    serve.add_argument(
        "--config",
        default=None,
        choices=["paper", "dense"],
        help="the preset; default: the configuration saved with the checkpoint, else paper",
    )
    serve.add_argument("--served-model-name", default=None, help="the model id clients send; default: --model")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--api-key", default=None, help="require 'Authorization: Bearer KEY' (default: $MINIRERANK_API_KEY if set)"
    )
    limits = serve.add_argument_group("limits")
    limits.add_argument("--max-body-bytes", type=int, default=32 * 1024 * 1024, help="request body limit (413)")
    limits.add_argument("--max-documents", type=int, default=1000, help="documents per request (422)")
    limits.add_argument("--max-image-pixels", type=int, default=16_000_000, help="pixels per image (422)")
    limits.add_argument("--max-images-per-item", type=int, default=16, help="images per query or document (422)")
    limits.add_argument(
        "--allow-image-host",
        action="append",
        default=[],
        metavar="HOST",
        help="a host whose http(s) image URLs may be fetched ('*.example.com' for subdomains; repeatable); "
        "without any, image URLs are refused (data: URIs are always accepted)",
    )
    limits.add_argument(
        "--allow-private-image-addresses",
        action="store_true",
        help="fetch from loopback, link-local and private addresses too (off: no SSRF into your network)",
    )
    limits.add_argument("--request-timeout", type=float, default=60.0, help="seconds per request (504)")
    limits.add_argument("--max-queue", type=int, default=256, help="requests admitted at once (503 + Retry-After)")
    batching = serve.add_argument_group("batching across requests")
    batching.add_argument("--batch-wait-ms", type=float, default=5.0, help="how long a batch waits for company")
    batching.add_argument("--batch-max-pairs", type=int, default=512, help="pairs per merged batch")
    batching.add_argument("--batch-workers", type=int, default=1, help="batches handed to the engine at once")
    batching.add_argument("--no-batching", action="store_true", help="score every request alone")
    batching.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        metavar="N",
        help="torch's CPU threads in this process (default: torch's own). On a CPU, 1 lets a merged call's batches "
        "run one per core, which is how docs/bench/serve-demo-cpu was measured",
    )
    serve.add_argument(
        "--graceful-timeout", type=float, default=60.0, help="seconds SIGTERM waits for requests in flight"
    )
    serve.add_argument(
        "--ray",
        action="store_true",
        help="run --replicas replicas behind Ray Serve (RAY_ADDRESS, else a local cluster); give them one store "
        "with --cache-url so a page pre-cached through one is warm on all",
    )
    serve.add_argument("--replicas", type=int, default=2, help="replicas with --ray, each loading the model once")
    add_engine_options(serve, store_required=False, device_help="where the model runs, e.g. cpu, cuda, cuda:1")
    serve.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    import os

    try:
        import uvicorn

        from ..serve import ServeSettings, create_app
    except ImportError as exc:
        return fail(f"minirerank serve needs the serve extra: pip install 'minirerank-integrations[serve]' ({exc})")
    from pydantic import ValidationError

    try:
        settings = ServeSettings(
            model_name=args.served_model_name or str(args.model),
            api_key=args.api_key or os.environ.get("MINIRERANK_API_KEY") or None,
            max_body_bytes=args.max_body_bytes,
            max_documents=args.max_documents,
            max_image_pixels=args.max_image_pixels,
            max_images_per_item=args.max_images_per_item,
            allowed_image_hosts=tuple(args.allow_image_host),
            allow_private_addresses=args.allow_private_image_addresses,
            request_timeout_s=args.request_timeout,
            max_queue=args.max_queue,
            batching=not args.no_batching,
            batch_wait_ms=args.batch_wait_ms,
            batch_max_pairs=args.batch_max_pairs,
            batch_workers=args.batch_workers,
        )
    except ValidationError as exc:
        return fail(f"bad serve option: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}")
    if args.torch_threads is not None:
        if args.torch_threads < 1:
            return fail(f"--torch-threads must be >= 1, got {args.torch_threads}")
        import torch

        torch.set_num_threads(args.torch_threads)
    if args.ray:
        from ..serve import ray_serve

        if args.replicas < 1:
            return fail(f"--replicas must be >= 1, got {args.replicas}")
        options = {
            "name_or_path": args.model,
            "config": args.config,
            "device": args.device,
            "dtype": args.dtype,
            "cache_dir": args.cache_dir,
            "cache_url": args.cache_url,
            "cache_namespace": args.cache_namespace,
            "cache_storage": args.cache_storage,
        }
        ray_serve.run(options, settings, replicas=args.replicas, host=args.host, port=args.port)
        return EXIT_OK
    app = create_app(lambda: load_engine(args), settings)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="info",
        timeout_graceful_shutdown=args.graceful_timeout,
    )
    return EXIT_OK
