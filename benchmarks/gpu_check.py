"""The device check: everything a first run on a GPU must confirm, in one process, everything on stdout.

1. versions: Python, torch, CUDA, cuDNN, transformers, the device, and where the project's dependencies were
   imported from (the wheel folder on a bare machine);
2. which SDPA kernel serves each dtype with this project's masks (and that each returns finite values);
3. fast path against the naive reference, float32 and bfloat16, every score asserted finite one by one;
4. the dense configuration against the plain transformers forward on the official prompt, both dtypes;
5. one ``adapt`` step on the tiny model (loss finite) and the score head's dtype under bfloat16 autocast;
6. the bench: the Qwen3-VL-2B shape at 1024x1024, N = 1, 10, 100, on CUDA; a tiny run elsewhere.

Exits 1 if any step fails (each failure printed with ``FAILED`` and its traceback), 2 without the asked device.

    benchmarks/gpu_check.sh                         # on the GPU machine: installs the wheels, then runs this
    GPU_CHECK_DEVICE=cpu benchmarks/gpu_check.sh    # the same steps on this machine, tiny shapes
    python benchmarks/gpu_check.py --pick-wheels .gpu-wheels   # the wheels gpu_check.sh installs (stdlib only)
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: fast path against the reference, on probabilities; bfloat16 rounds every layer's activations (8 mantissa bits)
TOLERANCE = {"float32": 1e-4, "bfloat16": 3e-2}
#: the dense path against the plain forward: float32 allows for TF32 matmuls on CUDA, if they are turned on
STOCK_TOLERANCE = {"float32": 2e-3, "bfloat16": 3e-2}
DTYPES = ("float32", "bfloat16")


# -- wheels: run by gpu_check.sh before anything else is importable, so the standard library only ------------


def pick_wheels(folder: Path, every: bool = False) -> list[Path]:
    """The wheels of ``folder`` to install here: those whose distribution this Python lacks (``every``: all),
    one per distribution, skipping wheels built for another Python or platform (the folder holds cp312 for the
    GPU machine and this machine's own build of any binary wheel)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        from packaging.tags import sys_tags
        from packaging.utils import canonicalize_name, parse_wheel_filename
    except ImportError:  # packaging comes with transformers; without it, trust the folder
        sys_tags = parse_wheel_filename = canonicalize_name = None  # type: ignore[assignment]
    supported = set(sys_tags()) if sys_tags is not None else None
    picked: dict[str, Path] = {}
    for path in sorted(folder.glob("*.whl")):
        if parse_wheel_filename is not None:
            name, _, _, tags = parse_wheel_filename(path.name)
            name = canonicalize_name(name)
        else:
            name, tags = path.name.split("-")[0].lower().replace("_", "-"), None
        if supported is not None and tags is not None and not tags & supported:
            continue
        if not every:
            try:
                version(name)
                continue  # already installed here
            except PackageNotFoundError:
                pass
        picked.setdefault(name, path)
    return list(picked.values())


# -- the steps -------------------------------------------------------------------------------------------------


class Checks:
    """Runs the steps, prints each result line, and remembers what failed."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def step(self, name: str, fn: Callable[[], None]) -> None:
        print(f"\n== {name} ==", flush=True)
        start = time.perf_counter()
        try:
            fn()
        except Exception:  # report and go on: one run shows every problem
            traceback.print_exc(file=sys.stdout)
            self.failures.append(f"{name}: raised")
            print(f"FAILED {name}: raised", flush=True)
        print(f"-- {name}: {time.perf_counter() - start:.1f} s", flush=True)

    def expect(self, ok: bool, line: str) -> None:
        print(f"{'ok    ' if ok else 'FAILED'} {line}", flush=True)
        if not ok:
            self.failures.append(line)


def non_finite(values) -> list[int]:
    """Indices of NaN or infinite values, tested one by one (``max`` of a list skips a NaN that is not first)."""
    return [i for i, v in enumerate(values) if not math.isfinite(float(v))]


def versions(device: str) -> None:
    import torch
    import transformers

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {cudnn}")
    print(f"transformers {transformers.__version__}, device {device}", end="")
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        print(f": {torch.cuda.get_device_name(index)}, capability {torch.cuda.get_device_capability(index)}")
    else:
        print(f", {torch.get_num_threads()} threads")
    for module in ("pydantic", "pydantic_core", "diskcache", "xxhash", "minirerank_integrations"):
        print(f"{module} from {Path(importlib.import_module(module).__file__).parent.parent}")


def _backend_name(query, keys, values, kwargs: dict) -> str:
    """The kernel torch picks for these arguments (its own dispatch, ``torch._fused_sdp_choice``)."""
    import torch
    from torch.nn.attention import SDPBackend

    names = {int(v): k.lower() for k, v in SDPBackend.__members__.items()}
    try:
        return names.get(int(torch._fused_sdp_choice(query, keys, values, **kwargs)), "?")
    except Exception as exc:  # a private function: report, do not fail the check on it
        return f"unknown ({type(exc).__name__})"


def sdpa_backends(checks: Checks, device: str) -> None:
    """Which kernel serves each dtype with the masks the layer loop builds, at the 2B model's head layout."""
    import torch

    from minirerank_integrations.engine import attention as L

    heads, kv_heads, dim, t, p = 16, 8, 128, 48, 32  # Qwen3-VL-2B: 16 query heads, 8 KV heads of 128
    valid = torch.ones(2, t, dtype=torch.bool, device=device)
    valid[1, :9] = False  # left padding in the second row
    padded = L.causal_mask(valid)  # [2, 1, t, t]
    band = torch.cat([padded.new_ones(2, 1, t, p), padded], -1)  # prefix keys, then its own
    cases = {
        "unpadded, causal": (t, t, None),
        "left-padded, causal": (t, t, padded),
        "band layer, prefix + own": (t, p + t, band),
        "exit layer, last token": (1, p + t, band[:, :, -1:]),
    }
    generator = torch.Generator(device=device).manual_seed(0)
    print(f"GQA mode for masked calls: {L.GQA_MODE}")
    for dtype_name in DTYPES + (("float16",) if device.startswith("cuda") else ()):
        dtype = getattr(torch, dtype_name)
        for name, (queries, n_keys, mask) in cases.items():
            q = torch.randn(2, heads, queries, dim, generator=generator, device=device).to(dtype)
            k = torch.randn(2, kv_heads, n_keys, dim, generator=generator, device=device).to(dtype)
            query, kwargs = L.sdpa_arguments(q, k, mask)
            backend = _backend_name(query, k, k, kwargs)
            out = L.attend(q, k, k, mask, dim**-0.5)
            checks.expect(bool(torch.isfinite(out).all()), f"{dtype_name:<9} {name:<26} kernel {backend}")
        # Before: float32's min cast to this dtype (-inf in bfloat16) with enable_gqa, a padding row fully masked.
        allowed = torch.ones(t, t, dtype=torch.bool, device=device).tril() & valid[:, None, None, :]
        bias = torch.where(allowed, 0.0, torch.finfo(torch.float32).min).to(dtype)
        q = torch.randn(2, heads, t, dim, generator=generator, device=device).to(dtype)
        k = torch.randn(2, kv_heads, t, dim, generator=generator, device=device).to(dtype)
        kwargs = {"attn_mask": bias, "enable_gqa": True}
        try:
            old = torch.nn.functional.scaled_dot_product_attention(q, k, k, **kwargs)
            rows = f"fully masked rows give {'NaN' if bool(old[1, :, 0].isnan().any()) else 'finite values'}"
        except Exception as exc:
            rows = f"raises {type(exc).__name__}"
        print(f"  (before: {dtype_name} float mask + enable_gqa: kernel {_backend_name(q, k, k, kwargs)}, {rows})")


def _pairs():
    """Every pair kind, images of three sizes, one image query over texts of three lengths (padded batches)."""
    from PIL import Image, ImageDraw

    from minirerank_integrations import Candidate, Query

    def drawn(width: int, height: int, seed: int) -> Image.Image:
        image = Image.new("RGB", (width, height), "white")
        draw = ImageDraw.Draw(image)
        for i in range(4):
            x, y = (seed * 37 + i * 53) % width, (seed * 11 + i * 29) % height
            draw.rectangle([x, y, x + width // 3, y + height // 3], fill=((seed * 80) % 256, i * 60, 200 - i * 40))
        return image

    a, b, c = drawn(64, 64, 1), drawn(96, 64, 2), drawn(128, 96, 3)
    return [
        (Query(text="a red circle on the left"), Candidate(images=[a])),
        (Query(text="two blue squares"), Candidate(text="a page title", images=[c])),
        (Query(images=[b]), Candidate(text="a blue square")),
        (Query(images=[b]), Candidate(text="two blue squares and a red circle drawn on a white page, left to right")),
        (Query(images=[a]), Candidate(images=[b, c])),
        (Query(text="capital of France"), Candidate(text="Paris is the capital of France.")),
    ]


#: with --quick: the configurations that cover layers before, in and after the band, and query-first
QUICK = ("dense", "paper", "band before the exit")


def _configs(depth: int, quick: bool = False) -> dict:
    from minirerank_integrations import RerankConfig

    configs = {
        "dense": RerankConfig.preset("dense", depth),
        "paper": RerankConfig.preset("paper", depth),
        "paper-narrow, full-depth guide": RerankConfig.preset("paper-narrow", depth, pruning_guide_layers=None),
        "empty band": RerankConfig(format="vision_first", exit_layer=depth // 2, band=(2, 2)),
        "band before the exit": RerankConfig(format="vision_first", exit_layer=depth - 2, band=(1, 3), keep_ratio=0.5),
        "instruction in prefix": RerankConfig.preset("paper", depth, instruction_in_prefix=True),
    }
    return {name: c for name, c in configs.items() if name in QUICK} if quick else configs


def fast_vs_reference(checks: Checks, device: str, tiny: Path, quick: bool) -> None:
    from minirerank_integrations import MiniReranker

    pairs = _pairs()[:4] if quick else _pairs()
    float32_scores: dict[str, list[float]] = {}
    for dtype in DTYPES:
        engine = MiniReranker.from_pretrained(tiny, config="dense", device=device, dtype=dtype)
        for name, config in _configs(engine.num_layers, quick).items():
            engine.config = config.model_copy(update={"batch_size": 4})  # padded batches, two of them
            fast, reference = engine.score(pairs), engine.reference_scores(pairs)
            bad = non_finite(fast) + non_finite(reference)
            worst = max((abs(f - r) for f, r in zip(fast, reference)), default=0.0)
            line = f"{dtype:<9} {name:<31} fast vs reference max |diff| {worst:.2e} (tolerance {TOLERANCE[dtype]})"
            if dtype == "float32":
                float32_scores[name] = fast
            elif name in float32_scores:
                line += f", vs float32 {max(abs(f - g) for f, g in zip(fast, float32_scores[name])):.2e}"
            if bad:
                line += f"; NON-FINITE scores: fast {fast}, reference {reference}"
            checks.expect(not bad and worst <= TOLERANCE[dtype], line)


def _stock_probability(backbone, prompt: str, images: list, device: str) -> float:
    """sigmoid(yes - no) of the last token from ``Qwen3VLForConditionalGeneration``'s own forward."""
    import torch

    model = backbone.model
    ids = torch.tensor([backbone.tokenizer(prompt, add_special_tokens=False)["input_ids"]], device=device)
    kwargs = {}
    if images:
        out = backbone.image_processor(images=images, do_resize=False, return_tensors="pt")
        kwargs = {
            "pixel_values": out["pixel_values"].to(device),
            "image_grid_thw": out["image_grid_thw"].to(device),
            "mm_token_type_ids": (ids == model.config.image_token_id).int(),
        }
    with torch.no_grad():
        logits = model(input_ids=ids, **kwargs).logits[0, -1].float()
    return float(torch.sigmoid(logits[backbone.yes_id] - logits[backbone.no_id]))


def dense_vs_plain_forward(checks: Checks, device: str, tiny: Path) -> None:
    # The official prompt, written out by hand from docs/design.md ("Reference semantics"), as the tests use it.
    spec = importlib.util.spec_from_file_location("stock_reference", ROOT / "tests" / "stock_reference.py")
    stock_reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stock_reference)
    official_prompt = stock_reference.official_prompt

    from minirerank_integrations import MiniReranker

    pairs = _pairs()
    for dtype in DTYPES:
        engine = MiniReranker.from_pretrained(tiny, config="dense", device=device, dtype=dtype)
        scores = engine.score(pairs)
        stock = [
            _stock_probability(
                engine.backbone,
                official_prompt(q.text, q.images, d.text, d.images),
                [*q.images, *d.images],
                device,
            )
            for q, d in pairs
        ]
        bad = non_finite(scores) + non_finite(stock)
        worst = max(abs(s - r) for s, r in zip(scores, stock))
        line = f"{dtype:<9} dense vs plain forward max |diff| {worst:.2e} (tolerance {STOCK_TOLERANCE[dtype]})"
        checks.expect(not bad and worst <= STOCK_TOLERANCE[dtype], line + (f"; NON-FINITE {bad}" if bad else ""))


def adapt_step(checks: Checks, device: str, tiny: Path) -> None:
    import torch

    from minirerank_integrations import MiniReranker, RerankConfig
    from minirerank_integrations.quality.adapt import AdaptSettings, adapt
    from minirerank_integrations.quality.data import generate

    base = MiniReranker.from_pretrained(tiny, config="dense", device=device)
    target = RerankConfig(format="vision_first", exit_layer=base.num_layers // 2, band=(0, 1), keep_ratio=0.5)
    tasks = generate("text_to_image", "train", 2, seed=0, candidates_per_query=4, image_size=64)
    base.config = target
    pairs = [(tasks[0].query, candidate) for candidate in tasks[0].candidates]
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        logits = base.logits(pairs, fast=True)
    bad = non_finite(logits.detach().float().cpu().tolist())
    checks.expect(
        logits.dtype == torch.float32 and not bad, f"score head under bfloat16 autocast: {logits.dtype}, finite"
    )
    base.config = "dense"
    settings = AdaptSettings(
        steps=1, queries_per_step=2, group_size=4, teacher_top=2, lora_dropout=0.0, micro_batch_pairs=4, lr=1e-3
    )
    with tempfile.TemporaryDirectory() as out:
        result = adapt(base, tasks, target, out, settings, device=device, progress=False)
    losses = result.losses
    checks.expect(bool(losses) and not non_finite(losses), f"adapt: {result.steps_done} step(s), losses {losses}")


def bench(checks: Checks, device: str, out: str | None) -> None:
    from minirerank_integrations.bench.runner import BenchSettings, run_bench, write_outputs

    if device.startswith("cuda"):  # the numbers that matter: the 2B shape, bfloat16 weights
        settings = BenchSettings(
            shape="qwen3-vl-2b",
            sizes=(1024,),
            warm_n=(1, 10, 100),
            dense_pairs=4,
            dense_batch=8,
            ingest_docs=4,
            text_candidates=10,
            device=device,
            dtype="bfloat16",
            guide_layers=(2, None),
            profile=False,
        )
    else:  # the same code on the tiny shape: a smoke run, its numbers mean nothing
        settings = BenchSettings(
            shape="tiny",
            sizes=(64,),
            warm_n=(1, 2),
            dense_pairs=1,
            dense_batch=1,
            ingest_docs=1,
            text_candidates=2,
            methods=("paper",),
            device=device,
            guide_layers=(2,),
            instruction_in_prefix=False,
            profile=False,
        )
    result = run_bench(settings)
    rows = result["rows"]
    print(
        f"{'workload':<12} {'size':>5} {'method':<16} {'state':<6} {'n':>4} {'s/pair':>10} {'x dense':>8} {'peak GPU':>9}"
    )
    for row in rows:
        gpu = row["peak_gpu_bytes"]
        ratio = row["ratio_to_dense_official"]
        print(
            f"{row['workload'] or '':<12} {row['image_size'] or '':>5} {row['method'] or '':<16} "
            f"{row['state'] or '':<6} {row['n'] or '':>4} {row['seconds_per_pair'] or 0:>10.4f} "
            f"{'' if ratio is None else f'{ratio:.3f}':>8} {'' if gpu is None else f'{gpu / 2**30:.2f} GiB':>9}"
        )
    timed = [r["seconds_per_pair"] for r in rows if r["seconds_per_pair"] is not None]
    checks.expect(bool(rows) and not non_finite(timed), f"bench: {len(rows)} rows, every time finite")
    if out:
        written = write_outputs(result, out, plots=False)
        print("bench outputs: " + ", ".join(str(p) for p in written))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=os.environ.get("GPU_CHECK_DEVICE", "cuda"))
    parser.add_argument("--out", default=None, help="also write the bench's bench.json and profile.txt here")
    parser.add_argument("--skip", nargs="*", default=[], help="steps to leave out, by name: bench, adapt, ...")
    parser.add_argument("--quick", action="store_true", help="fast vs reference on 3 configurations and 4 pairs")
    parser.add_argument("--pick-wheels", metavar="FOLDER", help="print the wheels gpu_check.sh installs and exit")
    parser.add_argument("--every-wheel", action="store_true", help="with --pick-wheels: installed ones too")
    args = parser.parse_args(argv)
    if args.pick_wheels:
        for path in pick_wheels(Path(args.pick_wheels), every=args.every_wheel):
            print(path)
        return 0

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; GPU_CHECK_DEVICE=cpu runs the same steps on the CPU", flush=True)
        return 2
    if args.device.startswith("cuda"):
        torch.cuda.set_device(torch.device(args.device))
    from minirerank_integrations.tiny_checkpoint import build_tiny_checkpoint

    start = time.perf_counter()
    checks = Checks()
    tiny = build_tiny_checkpoint(Path(tempfile.mkdtemp(prefix="gpu-check-")) / "tiny8", num_layers=8, seed=1)
    steps: dict[str, Callable[[], None]] = {
        "versions": lambda: versions(args.device),
        "sdpa": lambda: sdpa_backends(checks, args.device),
        "fast-vs-reference": lambda: fast_vs_reference(checks, args.device, tiny, args.quick),
        "dense-vs-plain": lambda: dense_vs_plain_forward(checks, args.device, tiny),
        "adapt": lambda: adapt_step(checks, args.device, tiny),
        "bench": lambda: bench(checks, args.device, args.out),
    }
    for name, fn in steps.items():
        if name not in args.skip:
            checks.step(name, fn)
    seconds = time.perf_counter() - start
    if checks.failures:
        print(f"\ngpu_check: {len(checks.failures)} FAILED in {seconds:.0f} s:", flush=True)
        for line in checks.failures:
            print(f"  {line}")
        return 1
    print(f"\ngpu_check: every step passed on {args.device} in {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
