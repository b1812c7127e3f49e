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
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, get_args, get_origin

from ..errors import ConfigError
from ..store.config import StoreConfig
from ..store.precision import Storage

if TYPE_CHECKING:
    from ..engine.reranker import MiniReranker

EXIT_OK = 0
EXIT_DROPPED = 1  # `cache verify` removed entries
EXIT_FAILED = 1  # `precache` could not store some documents (each is listed with its reason)
EXIT_USAGE = 2  # same status argparse uses for bad arguments

Handler: TypeAlias = Callable[[argparse.Namespace], int]
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

STORAGES = list(get_args(Storage))  # the codec's precisions, spelled once
DTYPES = ["auto", "float32", "bfloat16", "float16"]  # auto: bfloat16 on CUDA, float32 elsewhere


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
    """The prefix store (``--cache-dir`` or ``--cache-url``, and one ``--cache-*`` option per other
    :class:`~minirerank_integrations.store.StoreConfig` field, its help and default read from the field) and
    the device and dtype, as ``load_engine`` reads them: one spelling for every command, so a store
    ``precache`` filled is the one ``rerank`` reads."""
    store = parser.add_mutually_exclusive_group(required=store_required)
    for name, field in StoreConfig.model_fields.items():
        flag = "--cache-" + name.replace("_", "-")
        choices = _choices(field.annotation)
        metavar = None if choices else _METAVARS.get(name, name.upper())
        default = "" if field.default is None else f" (default: {field.default})"
        if field.annotation is bool:  # an on/off setting is a flag: given, it is on
            parser.add_argument(flag, dest=f"cache_{name}", action="store_true", default=None, help=field.description)
            continue
        (store if name in ("dir", "url") else parser).add_argument(
            flag,
            dest=f"cache_{name}",  # None: the StoreConfig default
            default=None,
            type=_number_type(field.annotation),
            choices=choices,
            metavar=metavar,
            help=(field.description or "").replace("%", "%%") + default,
        )
    parser.add_argument(
        "--device", default=None, help=device_help + " (default: cuda, mps or cpu, whichever is present)"
    )
    parser.add_argument(
        "--dtype", default="auto", choices=DTYPES, help="weights dtype (default: bfloat16 on CUDA, float32 elsewhere)"
    )


def store_config(args: argparse.Namespace, **overrides: Any) -> StoreConfig:
    """The :class:`StoreConfig` that the ``--cache-*`` options of ``add_engine_options`` describe; ``overrides``
    (``cache_memory_limit=0``, ...) replace options. A bad value is a ``ConfigError`` naming the option."""
    options = {f"cache_{name}": getattr(args, f"cache_{name}", None) for name in StoreConfig.model_fields}
    try:
        return StoreConfig.from_options(**(options | overrides))
    except ConfigError as error:
        # Name the options as the shell user typed them.
        message = str(error)
        for name in StoreConfig.model_fields:
            message = message.replace(f"cache_{name}", "--cache-" + name.replace("_", "-"))
        raise ConfigError(message) from None


def load_engine(args: argparse.Namespace, **overrides: Any) -> MiniReranker:
    """``MiniReranker.from_pretrained`` with the options of ``add_engine_options`` (and ``--model``,
    ``--config``); ``overrides`` adds or replaces keyword arguments (``cache_*`` ones change the store). The
    store's settings are checked before the model loads."""
    from ..engine.loading import default_device
    from ..engine.reranker import MiniReranker

    store_overrides = {k: overrides.pop(k) for k in list(overrides) if k.startswith("cache_") or k == "store"}
    store = store_config(args, **store_overrides)
    kwargs: dict[str, Any] = {"config": args.config, "device": args.device or default_device(), "dtype": args.dtype}
    return MiniReranker.from_pretrained(args.model, **(kwargs | {"store": store} | overrides))


#: Placeholders in ``--help`` for the store's options.
_METAVARS = {"dir": "DIR", "url": "URL", "local_dir": "DIR", "namespace": "WORD"}
_METAVARS |= {"size_limit": "BYTES", "memory_limit": "BYTES", "ttl": "SECONDS"}


def _choices(annotation: Any) -> list[str] | None:
    """A Literal field's values, for argparse's ``choices``."""
    return list(get_args(annotation)) if get_origin(annotation) is Literal else None


def _number_type(annotation: Any) -> Callable[[str], Any]:
    """``int`` or ``float`` for a numeric field (``int | None`` included); ``str`` for the others."""
    kinds = {annotation} | set(get_args(annotation))
    return int if int in kinds else float if float in kinds else str
