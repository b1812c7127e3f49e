"""The Ray tests, each file in a child pytest process of its own.

Ray's native threads (its gRPC, GCS client and event-engine threads) outlive ``ray.shutdown()``, and a second
Ray session in one process is not supported (ray-project/ray#31145). With both sessions in the suite's own
process, its exit once crashed (a segmentation fault after every test had passed). A child process holds one
Ray session, and its exit is checked like any other result.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
CASES = ["scale/ray_precache_cases.py", "serve/ray_serve_cases.py"]
_NOT_PASSED = {"failure", "error", "skipped"}


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


@pytest.mark.parametrize("cases", CASES)
def test_ray_cases_pass_in_a_process_of_their_own(cases: str, tmp_path: Path) -> None:
    path = TESTS / cases
    report = tmp_path / "report.xml"
    done = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-m", "pytest", str(path), "-q", f"--junitxml={report}"],
        cwd=TESTS.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout[-6000:] + done.stderr[-3000:]
    assert done.returncode == 0, output  # a crash at exit fails here too (-11: a segmentation fault)
    cases_run = ElementTree.parse(report).getroot().iter("testcase")
    passed = {case.get("name") for case in cases_run if not any(part.tag in _NOT_PASSED for part in case)}
    assert passed == _test_names(path), output


def test_only_the_case_files_start_ray() -> None:
    """A Ray session started in the suite's own process outlives its shutdown (above): only the case files, each
    run in a child, start one."""
    starts = ("ray.init(", "ray_serve.start(", "precache_on_ray(", "serve.run(")
    files = [*TESTS.rglob("*.py"), *TESTS.parent.glob("adapters/*/tests/**/*.py"), *TESTS.parent.glob("cookbook/*.py")]
    starting = {
        path.relative_to(TESTS.parent).as_posix()
        for path in files
        if path != Path(__file__).resolve() and any(start in path.read_text() for start in starts)
    }
    assert starting == {f"tests/{cases}" for cases in CASES}
