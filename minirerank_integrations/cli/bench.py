"""``minirerank bench``: the engine against the dense baselines at a real model shape, in one run.

Writes ``bench.json`` (every row, the machine, ingestion stages, profiles), ``profile.txt`` and the PNG plots
under ``--out``, and prints the rows with their ratio to dense-official and the targets' verdicts.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ._common import EXIT_OK, Subparsers, fail
from .flags import add_settings_flags, settings_from_flags


def add_commands(commands: Subparsers) -> None:
    from ..bench.settings import BenchSettings

    parser = commands.add_parser(
        "bench",
        help="time dense vs the engine (cold and warm) on a random-weight model of a real shape",
        description=__doc__.splitlines()[0],
    )
    add_settings_flags(parser, BenchSettings)  # one flag per field, its default and help read from the field
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib needed)")
    parser.add_argument("--out", default="bench-out", help="output directory (default: bench-out)")
    parser.set_defaults(handler=_bench)


def _bench(args: argparse.Namespace) -> int:
    from ..bench.settings import BenchSettings
    from ..errors import ConfigError

    try:
        settings = settings_from_flags(args, BenchSettings)
    except ConfigError as exc:
        return fail(exc)
    from ..bench import run_bench, write_outputs
    from ..bench.report import summary

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    partial = out / "bench.partial.jsonl"
    partial.write_text("", encoding="utf-8")

    def on_row(row: dict[str, object]) -> None:  # a long run leaves its rows behind even if stopped
        with partial.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    try:
        result = run_bench(settings, on_row)
        paths = write_outputs(result, out, plots=not args.no_plots)
    except (ValueError, ImportError, OSError) as exc:
        return fail(exc)
    partial.unlink(missing_ok=True)
    print(summary(result))
    print("wrote " + ", ".join(str(p) for p in paths))
    return EXIT_OK
