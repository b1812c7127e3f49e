"""What every command shares: exit statuses and the one-line error convention.

A command reports a failure as one line on stderr, ``minirerank: <message>``, and returns an exit status;
it never lets a traceback reach a shell user.
"""

from __future__ import annotations

import argparse
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
