"""benchmarks/gpu_check.sh, the device check, run here on the CPU from a copy of the project (as on a bare machine:
the project from PYTHONPATH, its missing packages from the wheel folder ``make gpu-wheels`` builds)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WHEELS = ROOT / ".gpu-wheels"
STEPS = ("versions", "sdpa", "fast-vs-reference", "dense-vs-plain", "adapt", "bench")


def _gpu_check_module():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _copy_of_the_project(tmp_path: Path) -> Path:
    """What the device machine gets: the package, the scripts and the hand-written official prompt."""
    clone = tmp_path / "clone"
    for part in ("minirerank_integrations", "benchmarks"):
        shutil.copytree(ROOT / part, clone / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (clone / "tests").mkdir()
    shutil.copy(ROOT / "tests" / "stock_reference.py", clone / "tests")
    return clone


def _run(clone: Path, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "PY": sys.executable, "GPU_CHECK_WHEELS": str(WHEELS), "TMPDIR": str(tmp_path), **env}
    return subprocess.run(
        ["bash", str(clone / "benchmarks" / "gpu_check.sh")], env=full, capture_output=True, text=True, timeout=1500
    )


def test_gpu_check_passes_on_the_cpu_from_a_copy_of_the_project(tmp_path):
    clone = _copy_of_the_project(tmp_path)
    # every wheel that fits this Python is installed into the check's own folder, even where the venv has it
    run = _run(clone, tmp_path, GPU_CHECK_DEVICE="cpu", GPU_CHECK_ARGS="--quick", GPU_CHECK_INSTALL="all")
    out = run.stdout
    assert run.returncode == 0, out[-6000:] + run.stderr[-2000:]
    for step in STEPS:
        assert f"== {step} ==" in out
    assert "FAILED" not in out
    assert "gpu_check: every step passed on cpu" in out
    assert f"minirerank_integrations from {clone}\n" in out  # the project from PYTHONPATH, not the venv's install
    assert re.search(r"^ok +float32 +left-padded, causal +kernel \S+", out, re.M)
    assert re.search(r"^ok +bfloat16 +band before the exit +fast vs reference", out, re.M)
    assert re.search(r"^ok +adapt: 1 step", out, re.M)
    if WHEELS.is_dir():  # built by `make gpu-wheels`
        target = re.search(r"installing into (\S+):", out).group(1)
        for module in ("pydantic", "pydantic_core", "diskcache"):
            assert f"{module} from {target}\n" in out
    assert not list(tmp_path.glob("minirerank-gpu-check.*")), "the install folder is removed at the end"


def test_gpu_check_without_the_device_says_so_and_fails(tmp_path):
    import torch

    clone = _copy_of_the_project(tmp_path)
    run = _run(clone, tmp_path, GPU_CHECK_DEVICE="cuda:7")  # no machine here has an eighth GPU
    assert run.returncode != 0
    assert f"gpu_check.sh: exit {run.returncode} after" in run.stdout
    if not torch.cuda.is_available():
        assert run.returncode == 2 and "no CUDA device here" in run.stdout


def test_non_finite_sees_a_nan_that_max_would_skip():
    gpu_check = _gpu_check_module()
    scores = [0.25, float("nan"), 0.5, float("inf")]
    assert max(abs(s) for s in scores[:3]) == 0.5  # the comparison max() makes skips the NaN
    assert gpu_check.non_finite(scores) == [1, 3]
    assert gpu_check.non_finite([0.1, 0.2]) == []


def test_pick_wheels_takes_what_fits_this_python_and_is_missing(tmp_path):
    gpu_check = _gpu_check_module()
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    names = [
        "pydantic-2.0.0-py3-none-any.whl",
        f"pydantic_core-2.0.0-{tag}-{tag}-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
        "pydantic_core-2.0.0-cp39-cp39-win_amd64.whl",  # another Python and platform: never picked
        "not_installed_anywhere_pkg-1.0-py3-none-any.whl",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    missing = [p.name for p in gpu_check.pick_wheels(tmp_path)]
    assert missing == ["not_installed_anywhere_pkg-1.0-py3-none-any.whl"]  # pydantic is installed here
    every = sorted(p.name for p in gpu_check.pick_wheels(tmp_path, every=True))
    if sys.platform == "linux" and os.uname().machine == "x86_64":
        assert every == sorted([names[0], names[1], names[3]])
    else:
        assert names[2] not in every
