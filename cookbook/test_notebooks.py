"""Every cookbook notebook runs top to bottom (its cells hold their own assertions), and is committed
without large outputs.

Cells tagged ``requires-gpu`` need a CUDA device and a local Qwen3-VL-Reranker-2B checkpoint: the notebook
runs without them in ``test_notebook_runs``, and ``test_gpu_cells_run`` runs the whole notebook where both
exist and is skipped, with the missing one named, where they do not.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted(Path(__file__).parent.glob("*.ipynb"))
GPU_TAG = "requires-gpu"
CHECKPOINT_ENV = "MINIRERANK_QWEN3_VL_RERANKER_2B"
#: A committed notebook's outputs stay small: a few tiny thumbnails at most, no plots or tensors.
MAX_OUTPUT_BYTES = 20_000


def _gpu_cells(notebook) -> list[int]:
    return [i for i, cell in enumerate(notebook.cells) if GPU_TAG in cell.get("metadata", {}).get("tags", [])]


def _gpu_missing() -> str | None:
    """Why the GPU cells cannot run here, or None when they can."""
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
    guarded = set(_gpu_cells(notebook))
    notebook.cells = [cell for i, cell in enumerate(notebook.cells) if i not in guarded]
    _execute(notebook, tmp_path)


@pytest.mark.parametrize(
    "path", [p for p in NOTEBOOKS if _gpu_cells(nbformat.read(p, as_version=4))], ids=lambda p: p.name
)
def test_gpu_cells_run(path, tmp_path):
    missing = _gpu_missing()
    if missing is not None:
        pytest.skip(f"the {GPU_TAG} cells need a CUDA device and the checkpoint: {missing}")
    _execute(copy.deepcopy(nbformat.read(path, as_version=4)), tmp_path)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_outputs_are_small(path):
    notebook = nbformat.read(path, as_version=4)
    sizes = [len(json.dumps(cell.get("outputs", []))) for cell in notebook.cells]
    assert max(sizes, default=0) <= MAX_OUTPUT_BYTES, f"{path.name}: a cell's outputs exceed {MAX_OUTPUT_BYTES} bytes"
