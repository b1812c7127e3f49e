"""The ``minirerank`` command line: one module per command family.

Each module (:mod:`.demo`, :mod:`.rerank`, :mod:`.evaluate`, :mod:`.cache`, :mod:`.precache`, :mod:`.bench`,
:mod:`.adapt`, :mod:`.serve`) has an ``add_commands`` function that registers its subcommands and sets ``handler`` (a function from the
parsed arguments to an exit status); :mod:`._common` holds the exit statuses and the one-line error convention.

Exit statuses: 0 success; 1 ``cache verify`` found and dropped unreadable entries (so scripts and cron
jobs notice damage; a second run then exits 0), or ``precache`` could not store some documents; 2 usage errors (argparse), bad input, or a cache
directory that does not hold a prefix cache or cannot be opened.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from . import adapt, bench, cache, demo, evaluate, precache, rerank, serve
from ._common import Handler, fail, quiet_third_party

__all__ = ["build_parser", "main"]

_FAMILIES = (demo, rerank, evaluate, cache, precache, bench, adapt, serve)


def build_parser() -> argparse.ArgumentParser:
    """The full parser; each subcommand sets ``handler`` in its defaults."""
    parser = argparse.ArgumentParser(prog="minirerank", description="Multimodal reranking on Qwen3-VL.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument(
        "--verbose", action="store_true", help="keep third-party libraries' loading messages and progress bars"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for family in _FAMILIES:
        family.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (``sys.argv[1:]`` when None) and return the exit status.

    A library error (:class:`~minirerank_integrations.errors.MiniRerankError`) that a command did not
    report itself is reported here as one line, never as a traceback.
    """
    from ..errors import MiniRerankError

    args = build_parser().parse_args(argv)
    if not args.verbose:
        quiet_third_party()
    handler: Handler = args.handler
    with warnings.catch_warnings():  # restores the display hook when the command returns
        warnings.showwarning = _one_line_warning
        try:
            return handler(args)
        except MiniRerankError as exc:
            return fail(exc)


def _one_line_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
    print(f"minirerank: warning: {message}", file=sys.stderr)


def _version() -> str:
    from .. import __version__

    return __version__
