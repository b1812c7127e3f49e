"""What every command shares: exit statuses and the one-line error convention.

A command reports a failure as one line on stderr, ``minirerank: <message>``, and returns an exit status;
it never lets a traceback reach a shell user.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import TypeAlias

EXIT_OK = 0
EXIT_DROPPED = 1  # `cache verify` removed entries
EXIT_FAILED = 1  # `precache` could not store some documents (each is listed with its reason)
EXIT_USAGE = 2  # same status argparse uses for bad arguments

Handler: TypeAlias = Callable[[argparse.Namespace], int]
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


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
