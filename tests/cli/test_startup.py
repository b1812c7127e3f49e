"""``minirerank --help``, each command's help and argument errors answer without importing torch (it takes
seconds to import; a user asking for help waits for nothing)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

COMMANDS = [
    ["--help"],
    ["rerank", "--help"],
    ["precache", "--help"],
    ["bench", "--help"],
    ["adapt", "--help"],
    ["serve", "--help"],
    ["cache", "stats", "--help"],
    ["rerank"],  # missing arguments: argparse's usage error
    ["bench", "--shape", "no-such-shape"],
]

_PROBE = textwrap.dedent(
    """
    import contextlib, io, json, sys
    from minirerank_integrations.cli import main
    out = []
    for argv in json.loads(sys.argv[1]):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                status = main(argv)
            except SystemExit as exc:
                status = exc.code
        out.append([argv, status, "torch" in sys.modules])
    print(json.dumps(out))
    """
)


def test_help_and_usage_errors_do_not_import_torch():
    run = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(COMMANDS)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout.strip().splitlines()[-1])
    for argv, status, torch_loaded in results:
        assert status in (0, 2), (argv, status)
        assert not torch_loaded, f"minirerank {' '.join(argv)} imported torch"
    assert [status for _, status, _ in results][-2:] == [2, 2]
