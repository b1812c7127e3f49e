"""Every cookbook notebook runs top to bottom (its cells hold their own assertions), and is committed
without large outputs.

Cells tagged ``requires-gpu`` need a CUDA device and a local Qwen3-VL-Reranker-2B checkpoint; cells tagged
``requires-scale`` need ``redis-server``, the ``redis`` and ``ray`` extras and the ``scale`` package. Each
notebook runs without its tagged cells in ``test_notebook_runs``; ``test_guarded_cells_run`` runs the whole
notebook where what its tags need exists, and is skipped, naming what is missing, where it does not.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted(Path(__file__).parent.glob("*.ipynb"))
CHECKPOINT_ENV = "MINIRERANK_QWEN3_VL_RERANKER_2B"
#: A committed notebook's outputs stay small: a few tiny thumbnails at most, no plots or tensors.
MAX_OUTPUT_BYTES = 20_000


def _tags(cell) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", [])) & set(GUARDS)


def _gpu_missing() -> str | None:
    """Why the ``requires-gpu`` cells cannot run here, or None when they can."""
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device"
    folder = os.environ.get(CHECKPOINT_ENV)
    if folder and Path(folder, "config.json").is_file():
        return None
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache("Qwen/Qwen3-VL-Reranker-2B", "config.json"), str):
        return None
    return f"no local Qwen3-VL-Reranker-2B checkpoint (set {CHECKPOINT_ENV} to its folder)"


def _scale_missing() -> str | None:
    """Why the ``requires-scale`` cells cannot run here, or None when they can."""
    import importlib.util
    import shutil

    needed = {
        "redis-server on the PATH": shutil.which("redis-server") is not None,
        "redis-py (the redis extra)": importlib.util.find_spec("redis") is not None,
        "ray (the ray extra)": importlib.util.find_spec("ray") is not None,
        "the minirerank_integrations.scale package": importlib.util.find_spec("minirerank_integrations.scale")
        is not None,
    }
    missing = [what for what, present in needed.items() if not present]
    return ", ".join(missing) or None


#: Cell tag -> why the tagged cells cannot run here (None: they can).
GUARDS = {"requires-gpu": _gpu_missing, "requires-scale": _scale_missing}


def _execute(notebook, tmp_path: Path) -> None:
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    notebook.cells = [cell for cell in notebook.cells if not _tags(cell)]
    _execute(notebook, tmp_path)


GUARDED = {p: set().union(*(_tags(c) for c in nbformat.read(p, as_version=4).cells)) for p in NOTEBOOKS}


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if GUARDED[p]], ids=lambda p: p.name)
def test_guarded_cells_run(path, tmp_path):
    missing = {tag: GUARDS[tag]() for tag in sorted(GUARDED[path])}
    missing = {tag: why for tag, why in missing.items() if why is not None}
    if missing:
        pytest.skip("; ".join(f"the {tag} cells cannot run here: {why}" for tag, why in missing.items()))
    _execute(nbformat.read(path, as_version=4), tmp_path)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_outputs_are_small(path):
    notebook = nbformat.read(path, as_version=4)
    sizes = [len(json.dumps(cell.get("outputs", []))) for cell in notebook.cells]
    assert max(sizes, default=0) <= MAX_OUTPUT_BYTES, f"{path.name}: a cell's outputs exceed {MAX_OUTPUT_BYTES} bytes"
