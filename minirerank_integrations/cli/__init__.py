"""The ``minirerank`` command line: one module per command family.

Each module (:mod:`.demo`, :mod:`.rerank`, :mod:`.evaluate`, :mod:`.cache`, :mod:`.adapt`) has an ``add_commands``
function that registers its subcommands and sets ``handler`` (a function from the parsed arguments to
an exit status); :mod:`._common` holds the exit statuses and the one-line error convention.

Exit statuses: 0 success; 1 ``cache verify`` found and dropped unreadable entries (so scripts and cron
jobs notice damage; a second run then exits 0); 2 usage errors (argparse), bad input, or a cache
directory that does not hold a prefix cache or cannot be opened.
"""

from __future__ import annotations

import argparse

from . import adapt, cache, demo, evaluate, rerank
from ._common import Handler

__all__ = ["build_parser", "main"]

_FAMILIES = (demo, rerank, evaluate, cache, adapt)


def build_parser() -> argparse.ArgumentParser:
    """The full parser; each subcommand sets ``handler`` in its defaults."""
    parser = argparse.ArgumentParser(prog="minirerank", description="Multimodal reranking on Qwen3-VL.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for family in _FAMILIES:
        family.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (``sys.argv[1:]`` when None) and return the exit status."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)
