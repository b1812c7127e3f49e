"""Image work per candidate before and after keying images by their source, and the model fingerprint's cost.

Run: ``python -m minirerank_integrations.bench.image_keys`` (writes nothing; the output committed under docs/bench/).

- before: what every call did for each candidate image, seen or not: decode, resize, sha256 of the pixels;
- after, seen: what a candidate seen before costs now (a stat for a path; one xxh3 over the bytes for bytes);
- after, first sight: decode, resize and xxh3 of the source (what a new candidate costs now);
- the fingerprint: per-tensor digests over random bfloat16 weights, on this CPU (xxh3 in place), and the
  on-device modular digest run on this CPU (its cost on a GPU is a projection, stated as such).
"""

from __future__ import annotations

import io
import os
import platform
import statistics
import tempfile
import time

import numpy as np
import torch
from PIL import Image

from minirerank_integrations import Candidate, MiniReranker
from minirerank_integrations.engine import image_keys
from minirerank_integrations.engine.fingerprint import tensor_digest
from minirerank_integrations.engine.images import image_digest, prepare_image
from minirerank_integrations.tiny_checkpoint import build_tiny_checkpoint

TWO_B_BYTES = 4.4e9  # Qwen3-VL-2B in bfloat16 (issue 28)


def page(size: int = 1024) -> bytes:
    """A 1024x1024 PNG with a photo's entropy (gradient + noise), about as large as a scanned page."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 200, size)[None, :, None] + np.linspace(0, 40, size)[:, None, None]
    pixels = np.clip(ramp + rng.normal(0, 12, (size, size, 3)), 0, 255).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def timed(fn, repeat: int) -> float:
    """Median milliseconds of ``fn()`` over ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    data = page()
    folder = tempfile.mkdtemp()
    path = os.path.join(folder, "page.png")
    with open(path, "wb") as handle:
        handle.write(data)
    time.sleep(image_keys.SETTLE_SECONDS + 0.2)  # a file written just now is hashed, not trusted by its stamp
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"candidate: 1024x1024 PNG, {len(data)} bytes")

    before = timed(lambda: image_digest(prepare_image(path)), 10)

    def first_sight() -> None:
        image_keys.clear_memo()
        image_keys.key_image(path)

    first = timed(first_sight, 10)
    image_keys.key_image(path)
    seen_path = timed(lambda: image_keys.key_image(path), 200)
    image_keys.key_image(data)
    seen_bytes = timed(lambda: image_keys.key_image(data), 200)
    assert image_keys.key_image(path).image is None and image_keys.key_image(data).image is None
    engine = MiniReranker.from_pretrained(build_tiny_checkpoint(tempfile.mkdtemp()), config="dense")
    candidate = Candidate(images=[path])
    engine.prepare(candidate, "candidate")
    seen_side = timed(lambda: engine.prepare(candidate, "candidate"), 200)  # the whole side: text, images, grids
    print(f"before, every call (decode + resize + sha256 of pixels): {before:8.2f} ms")
    print(f"after, first sight (decode + resize + xxh3 of source):   {first:8.2f} ms  ({first / before:.2f}x)")
    print(
        f"after, seen path (stat + memo):                         {seen_path:8.3f} ms  ({before / seen_path:.0f}x less)"
    )
    print(
        f"after, seen candidate, whole side (MiniReranker.prepare): {seen_side:.3f} ms ({before / seen_side:.0f}x less)"
    )
    print(
        f"after, seen bytes (xxh3 over {len(data)} bytes):        {seen_bytes:8.3f} ms  ({before / seen_bytes:.0f}x less)"
    )

    weights = torch.randn(256 * 1024 * 1024, dtype=torch.bfloat16)  # 512 MiB of bfloat16 weights
    nbytes = weights.numel() * weights.element_size()
    tensor_digest(weights)
    cpu = timed(lambda: tensor_digest(weights), 3) / 1e3
    sample = weights[: 16 * 1024 * 1024]  # 32 MiB: the modular digest is meant for a GPU, slow on a CPU
    modular = timed(lambda: tensor_digest(sample, on_device=True), 3) / 1e3
    modular_rate = sample.numel() * sample.element_size() / modular
    print(
        f"fingerprint, CPU tensors (xxh3 in place): {nbytes / cpu / 1e9:6.2f} GB/s -> 2B shape {TWO_B_BYTES / (nbytes / cpu):.2f} s"
    )
    print(f"fingerprint, modular digest run on this CPU: {modular_rate / 1e9:6.3f} GB/s (it runs on the GPU there)")
    # On a GPU each 16 MB chunk of weights costs ~10 element-wise int64 kernels, ~450 MB of memory traffic: ~125 GB
    # for the 2B's 4.4 GB, ~40 ms at 3 TB/s (H100), plus ~900 chunks (630 tensors) x 10 launches x ~5 us ~ 45 ms.
    print("fingerprint, 2B shape on an H100 (projection, not measured): ~0.1 s (~125 GB of traffic, ~9000 launches)")


if __name__ == "__main__":
    main()
