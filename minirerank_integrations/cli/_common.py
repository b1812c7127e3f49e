"""What every command shares: exit statuses, the one-line error convention, and the options and loading of
an engine over a prefix store.

A command reports a failure as one line on stderr, ``minirerank: <message>``, and returns an exit status;
it never lets a traceback reach a shell user.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias, get_args

from ..store.codec import Storage

if TYPE_CHECKING:
    from ..engine.reranker import MiniReranker

EXIT_OK = 0
EXIT_DROPPED = 1  # `cache verify` removed entries
EXIT_FAILED = 1  # `precache` could not store some documents (each is listed with its reason)
EXIT_USAGE = 2  # same status argparse uses for bad arguments

Handler: TypeAlias = Callable[[argparse.Namespace], int]
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

STORAGES = list(get_args(Storage))  # the codec's precisions, spelled once
DTYPES = ["float32", "bfloat16", "float16"]


def fail(message: object, status: int = EXIT_USAGE) -> int:
    """Print ``minirerank: <message>`` on stderr and return ``status``."""
    print(f"minirerank: {message}", file=sys.stderr)
    return status


def quiet_third_party() -> None:
    """Silence what third-party libraries print while loading (transformers' weight-loading bars and
    warnings, the hub's download bars, tokenizers' fork notice): noise to a shell user. The command's own
    progress bars and errors still show; ``minirerank --verbose`` keeps everything.
    """
    # Read when those libraries are first imported, which the commands do lazily, after this runs.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if "transformers" in sys.modules:  # already imported (e.g. main() called from Python): set it directly
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)


def add_engine_options(
    parser: argparse.ArgumentParser, *, store_required: bool, device_help: str = "where the model runs, e.g. cpu, cuda"
) -> None:
    """The prefix store (``--cache-dir`` or ``--cache-url``, its namespace and precision) and the device and
    dtype, as ``load_engine`` reads them: one spelling for every command, so a store ``precache`` filled is
    the one ``rerank`` reads."""
    store = parser.add_mutually_exclusive_group(required=store_required)
    store.add_argument("--cache-dir", metavar="DIR", default=None, help="a persistent prefix cache directory")
    store.add_argument(
        "--cache-url",
        metavar="URL",
        default=None,
        help="a Redis or Valkey server, redis://host:6379/0 or rediss://; password in the URL or "
        "$MINIRERANK_REDIS_PASSWORD",
    )
    parser.add_argument("--cache-namespace", default="minirerank", help="prefix of the Redis keys")
    parser.add_argument("--cache-storage", default="float32", choices=STORAGES, help="precision of stored prefixes")
    parser.add_argument("--device", default="cpu", help=device_help)
    parser.add_argument("--dtype", default="float32", choices=DTYPES)


def load_engine(args: argparse.Namespace, **overrides: Any) -> MiniReranker:
    """``MiniReranker.from_pretrained`` with the options of ``add_engine_options`` (and ``--model``,
    ``--config``); ``overrides`` adds or replaces keyword arguments."""
    from ..engine.reranker import MiniReranker

    kwargs: dict[str, Any] = {
        "config": args.config,
        "device": args.device,
        "dtype": args.dtype,
        "cache_dir": args.cache_dir,
        "cache_url": args.cache_url,
        "cache_namespace": args.cache_namespace,
        "cache_storage": args.cache_storage,
    }
    return MiniReranker.from_pretrained(args.model, **(kwargs | overrides))
