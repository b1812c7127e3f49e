"""Child Python processes of the tests: they import the test helpers (``tests/``) and the module beside them."""

from __future__ import annotations

import os
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def child_env(test_file: str) -> dict[str, str]:
    """The environment of a ``python -c`` child that imports ``test_file``'s module and the shared helpers."""
    paths = [str(Path(test_file).resolve().parent), str(TESTS), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
