"""Label-free adaptation of a Qwen3-VL reranker to a fast configuration, by self-distillation.

The teacher is the checkpoint itself run dense (official query-first prompt, every layer, every token); the
student is the same weights under the fast configuration (vision-first, early exit, interaction band, visual
token pruning). On the user's (query, candidate list) groups the student learns to reproduce the teacher's
scores and order, so no relevance labels are needed; labels, when the tasks carry them, can be added.

- The teacher scores every candidate of every task once, before training, and the scores are cached on
  disk (safetensors, keyed by the teacher's weight digest and the tasks' content), so epochs and resumed
  runs never run the teacher again.
- Each training group is the teacher's top candidates of a task plus others drawn from its list: the
  negatives the teacher finds hardest are always present, without labels.
- Loss: KL divergence from the teacher's softmax over the group (its order) plus a point-wise binary
  cross-entropy towards sigmoid(teacher logit) (its scores); optionally the labels' listwise + BCE loss.
- LoRA through ``peft`` (merged at the end, so serving pays nothing for it) or full fine-tuning; the vision
  tower is frozen unless asked for.
- Resumable: every ``save_every`` steps the trainable weights, the optimizer, the step and the RNG state are
  written (safetensors + JSON); a run resumed from them continues exactly as the uninterrupted run would.

Outputs of :func:`adapt` in its output folder: the merged checkpoint (``from_pretrained`` loads it with its
``minirerank_config.json``), ``lora/`` (the adapter alone, see :func:`load_adapter`), ``adapt.json`` (the
settings, the time taken, the cache size), ``teacher_scores.safetensors`` and ``state/``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..engine.config import RerankConfig
from ..engine.modeling import ADAPT_FILE, CONFIG_FILE, load_backbone
from ..engine.reranker import MiniReranker
from ..errors import CacheError, ConfigError, InputError
from .data.tasks import RerankTask
from .training import merge_lora_layers, save_checkpoint

__all__ = [
    "ADAPT_FILE",
    "LORA_DIR",
    "AdaptResult",
    "AdaptSettings",
    "adapt",
    "adapt_loss",
    "load_adapter",
    "task_digest",
    "teacher_scores",
]

logger = logging.getLogger(__name__)

LORA_DIR = "lora"
STATE_DIR = "state"
TEACHER_FILE = "teacher_scores.safetensors"
EMA_FILE = "ema.safetensors"  # in STATE_DIR: the moving average of the trained weights, when settings.ema > 0
_LORA_WEIGHTS = "adapter.safetensors"
_LORA_CONFIG = "adapter.json"

# Every attention and MLP projection of the text decoder (the paper's LoRA targets) ...
_DECODER_TARGETS = r"language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
# ... and, with ``train_vision``, the vision blocks and mergers.
_VISION_TARGETS = (
    r"visual\.(blocks\.\d+\.(attn\.(qkv|proj)|mlp\.linear_fc(1|2))|(merger|deepstack_merger_list\.\d+)\.linear_fc(1|2))"
)


@dataclass
class AdaptSettings:
    """One adaptation run. Defaults follow the paper's LoRA recipe (rank 16, alpha 32, lr 1e-4)."""

    steps: int = 1000
    queries_per_step: int = 8  # groups per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    group_size: int = 8  # candidates per group: the teacher's top ``teacher_top``, the rest drawn
    teacher_top: int = 3
    method: Literal["lora", "full"] = "lora"
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    train_vision: bool = False
    lr: float | None = None  # None: 1e-4 for LoRA, 3e-4 for full fine-tuning
    warmup_steps: int = 20
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    distill_weight: float = 1.0  # KL from the teacher's softmax over each group
    score_weight: float = 0.2  # BCE towards sigmoid(teacher logit)
    temperature: float = 1.0
    label_weight: float = 0.0  # the labels' listwise + 0.2 x BCE, for labelled tasks
    save_every: int = 100
    ema: float = 0.0  # decay of an exponential moving average of the trained weights, served at the end; 0: off
    seed: int = 0
    teacher_batch: int = 32  # pairs per teacher forward pass

    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (1e-4 if self.method == "lora" else 3e-4)

    def check(self) -> None:
        if self.steps < 1 or self.queries_per_step < 1 or self.grad_accum < 1 or self.save_every < 1:
            raise ConfigError("steps, queries_per_step, grad_accum and save_every must be >= 1")
        if self.group_size < 2:
            raise ConfigError(f"group_size must be >= 2 (a ranking needs two candidates), got {self.group_size}")
        if not 1 <= self.teacher_top <= self.group_size:
            raise ConfigError(f"teacher_top must be in 1..group_size ({self.group_size}), got {self.teacher_top}")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.ema < 1.0:
            raise ConfigError(f"ema must be in [0, 1) (0 turns it off), got {self.ema}")
        if self.method not in ("lora", "full"):
            raise ConfigError(f"method must be 'lora' or 'full', got {self.method!r}")


@dataclass
class AdaptResult:
    """What :func:`adapt` did: losses per optimizer step (this run only), the steps done in total, seconds
    spent (teacher pass and training, this run), the teacher-score cache and where the outputs are."""

    losses: list[float] = field(default_factory=list)
    steps_done: int = 0
    teacher_seconds: float = 0.0
    train_seconds: float = 0.0
    teacher_cache: Path | None = None
    teacher_cache_bytes: int = 0
    teacher_cache_hit: bool = False
    checkpoint: Path | None = None
    lora: Path | None = None
    finished: bool = False


# --- teacher scores --------------------------------------------------------------------------------------


def task_digest(tasks: Sequence[RerankTask]) -> str:
    """A digest of what the teacher sees: every query and candidate (text, image references) in order.

    A local image file is identified by its path, size and modification time, so an image replaced on disk
    changes the digest; other references (URLs, data URIs, in-memory images) by their text or bytes.
    """
    digest = hashlib.blake2b(digest_size=32)

    def image_ref(image: object) -> str:
        if isinstance(image, (str, os.PathLike)) and Path(image).is_file():
            stat = Path(image).stat()
            return f"file:{os.fspath(image)}:{stat.st_size}:{stat.st_mtime_ns}"
        if isinstance(image, bytes):
            return "bytes:" + hashlib.blake2b(image, digest_size=16).hexdigest()
        if hasattr(image, "tobytes"):  # a PIL image
            return "pixels:" + hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest()  # type: ignore[attr-defined]
        return "ref:" + str(image)

    for task in tasks:
        items = [task.query, *task.candidates]
        record = [task.id, [[item.text, [image_ref(im) for im in item.images]] for item in items]]
        digest.update(json.dumps(record, ensure_ascii=False).encode())
    return digest.hexdigest()


@torch.no_grad()
def teacher_scores(
    teacher: MiniReranker,
    tasks: Sequence[RerankTask],
    cache: str | Path | None = None,
    *,
    batch_pairs: int = 32,
    progress: bool = True,
) -> tuple[list[torch.Tensor], bool]:
    """The teacher's logit(yes) - logit(no) for every candidate of every task, and whether they came from
    ``cache``.

    With ``cache`` (a ``.safetensors`` path) the scores are read from it when its key (the teacher's weight
    digest, its configuration and :func:`task_digest`) matches, else computed and written there.

    Raises:
        CacheError: ``cache`` exists but was written for another teacher, configuration or task list, or is
            unreadable (it is left untouched; delete it or choose another path).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    key = {
        "teacher": teacher.backbone.fingerprint(),
        "config": teacher.config.model_dump_json(),
        "tasks": task_digest(tasks),
        "count": str(len(tasks)),
    }
    path = Path(cache) if cache is not None else None
    if path is not None and path.exists():
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
            stored = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CacheError(f"{path}: teacher-score cache is unreadable ({exc}); delete it to recompute") from exc
        differs = [k for k in key if metadata.get(k) != key[k]]
        if differs:
            raise CacheError(
                f"{path}: teacher-score cache was written for another {', '.join(differs)}; "
                "delete it or pass another cache path"
            )
        return [stored[f"t{i}"] for i in range(len(tasks))], True

    scores: list[torch.Tensor] = []
    pairs = [(i, j) for i, task in enumerate(tasks) for j in range(len(task.candidates))]
    flat: list[torch.Tensor] = []
    for start in tqdm(range(0, len(pairs), batch_pairs), disable=not progress, desc="teacher", unit="batch"):
        chunk = pairs[start : start + batch_pairs]
        flat.append(teacher.logits([(tasks[i].query, tasks[i].candidates[j]) for i, j in chunk]).float().cpu())
    values = torch.cat(flat) if flat else torch.zeros(0)
    offset = 0
    for task in tasks:
        scores.append(values[offset : offset + len(task.candidates)].clone())
        offset += len(task.candidates)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        save_file({f"t{i}": s.contiguous() for i, s in enumerate(scores)}, str(partial), metadata=key)
        os.replace(partial, path)  # a crash mid-write leaves no half cache under the real name
    return scores, False


# --- groups and loss -------------------------------------------------------------------------------------


def sample_group(scores: torch.Tensor, size: int, top: int, rng: random.Random) -> list[int]:
    """Candidate indices: the teacher's ``top`` best, then others drawn at random, ``size`` in all (fewer when
    the task has fewer candidates)."""
    order = sorted(range(len(scores)), key=lambda j: (-float(scores[j]), j))
    chosen = order[:top]
    rest = order[top:]
    return chosen + rng.sample(rest, min(len(rest), size - len(chosen)))


def adapt_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    settings: AdaptSettings,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """The loss of a batch of groups: ``student``, ``teacher`` (and ``labels``) are [groups, size] logits.

    distill_weight x KL(teacher softmax || student softmax) at ``temperature`` (times t^2), + score_weight x
    BCE(student, sigmoid(teacher)), + label_weight x (listwise softmax over the positives + 0.2 x BCE) when
    ``labels`` are given.
    """
    t = settings.temperature
    loss = (
        settings.distill_weight
        * t
        * t
        * F.kl_div(
            F.log_softmax(student / t, dim=-1),
            F.log_softmax(teacher / t, dim=-1),
            log_target=True,
            reduction="batchmean",
        )
    )
    if settings.score_weight > 0:
        loss = loss + settings.score_weight * F.binary_cross_entropy_with_logits(student, torch.sigmoid(teacher))
    if labels is not None and settings.label_weight > 0:
        log_probs = F.log_softmax(student, dim=-1)
        has_positive = (labels > 0).any(dim=-1)
        listwise = -torch.logsumexp(log_probs.masked_fill(labels <= 0, float("-inf")), dim=-1)[has_positive]
        label_term = (listwise.mean() if len(listwise) else student.new_zeros(())) + 0.2 * (
            F.binary_cross_entropy_with_logits(student, (labels > 0).float())
        )
        loss = loss + settings.label_weight * label_term
    return loss


# --- the run ---------------------------------------------------------------------------------------------


def _step_rng(seed: int, step: int, micro: int) -> random.Random:
    return random.Random(f"adapt:{seed}:{step}:{micro}")


def _task_order(n: int, seed: int, epoch: int) -> list[int]:
    order = list(range(n))
    random.Random(f"adapt-order:{seed}:{epoch}").shuffle(order)
    return order


def _batch(
    tasks: Sequence[RerankTask], scores: Sequence[torch.Tensor], settings: AdaptSettings, step: int, micro: int
) -> tuple[list[tuple], torch.Tensor, torch.Tensor | None]:
    """Pairs, teacher logits [groups, size] and labels (or None) of one micro-batch; a pure function of the
    step, so a resumed run draws exactly the groups the uninterrupted run would."""
    n = len(tasks)
    per_step = settings.queries_per_step * settings.grad_accum
    rng = _step_rng(settings.seed, step, micro)
    size = min(settings.group_size, min(len(t.candidates) for t in tasks))
    pairs, teacher, labels = [], [], []
    for g in range(settings.queries_per_step):
        position = step * per_step + micro * settings.queries_per_step + g
        index = _task_order(n, settings.seed, position // n)[position % n]
        task = tasks[index]
        group = sample_group(scores[index], size, min(settings.teacher_top, size), rng)
        pairs += [(task.query, task.candidates[j]) for j in group]
        teacher.append(scores[index][group])
        labels.append([task.relevance[j] for j in group])
    labelled = settings.label_weight > 0 and all(t.labelled for t in tasks)
    return pairs, torch.stack(teacher), torch.tensor(labels) if labelled else None


def _add_lora(model: torch.nn.Module, settings: AdaptSettings) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    targets = rf".*({_DECODER_TARGETS}|{_VISION_TARGETS})" if settings.train_vision else rf".*{_DECODER_TARGETS}"
    config = LoraConfig(
        r=settings.lora_rank,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=targets,
    )
    for p in model.parameters():
        p.requires_grad_(False)
    inject_adapter_in_model(config, model)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)


def _merge_lora(model: torch.nn.Module) -> None:
    merge_lora_layers(model)
    for p in model.parameters():
        p.requires_grad_(False)


def _trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _save_state(
    directory: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    settings: AdaptSettings,
    averaged: dict[str, torch.Tensor] | None = None,
) -> None:
    """Trainable weights, optimizer moments, step, RNG state (and the weights' moving average), written to a
    fresh folder then swapped in."""
    from safetensors.torch import save_file

    tmp = directory.with_name(directory.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    params = _trainable(model)
    save_file({k: v.detach().contiguous().cpu() for k, v in params.items()}, str(tmp / "weights.safetensors"))
    names = {id(p): k for k, p in params.items()}
    moments: dict[str, torch.Tensor] = {}
    counts: dict[str, float] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if key == "step":
                    counts[names[id(p)]] = float(value)
                else:
                    moments[f"{names[id(p)]}::{key}"] = value.detach().contiguous().cpu()
    moments["__torch_rng__"] = torch.get_rng_state()
    if torch.cuda.is_available():
        moments["__cuda_rng__"] = torch.cuda.get_rng_state()
    save_file(moments, str(tmp / "optimizer.safetensors"))
    if averaged is not None:
        save_file({k: v.contiguous().cpu() for k, v in averaged.items()}, str(tmp / EMA_FILE))
    (tmp / "state.json").write_text(
        json.dumps({"step": step, "adam_steps": counts, "settings": asdict(settings)}, indent=1), encoding="utf-8"
    )
    if directory.exists():
        old = directory.with_name(directory.name + ".old")
        os.replace(directory, old)
        os.replace(tmp, directory)
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    else:
        os.replace(tmp, directory)


# Settings a resumed run may change: its length (the schedule's remaining decay follows) and how often it saves.
_RESUMABLE_CHANGES = {"steps", "save_every"}


def _load_state(
    directory: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    settings: AdaptSettings,
    averaged: dict[str, torch.Tensor] | None = None,
) -> int:
    from safetensors.torch import load_file

    meta = json.loads((directory / "state.json").read_text(encoding="utf-8"))
    saved, current = meta.get("settings", {}), asdict(settings)
    defaults = asdict(AdaptSettings())  # a setting added since the state was written had its default then
    differs = sorted(k for k in current if k not in _RESUMABLE_CHANGES and saved.get(k, defaults[k]) != current[k])
    if differs:
        raise CacheError(
            f"{directory}: saved state was trained with other settings ({', '.join(differs)}); start afresh"
        )
    if saved.get("steps") != settings.steps:
        logger.warning(
            "resuming at step %d with %d total steps instead of %s: the learning-rate decay is re-spread over the rest",
            meta["step"],
            settings.steps,
            saved.get("steps"),
        )
    params = _trainable(model)
    weights = load_file(str(directory / "weights.safetensors"))
    if set(weights) != set(params):
        raise CacheError(f"{directory}: saved state holds other trainable weights than this run; start afresh")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(weights[name].to(p.device, p.dtype))
    moments = load_file(str(directory / "optimizer.safetensors"))
    for group in optimizer.param_groups:
        for p in group["params"]:
            name = next(k for k, q in params.items() if q is p)
            if name in meta["adam_steps"]:
                state = {
                    key.split("::", 1)[1]: value.to(p.device)
                    for key, value in moments.items()
                    if key.startswith(name + "::")
                }
                state["step"] = torch.tensor(meta["adam_steps"][name])
                optimizer.state[p] = state
    if averaged is not None:
        saved_average = load_file(str(directory / EMA_FILE))
        if set(saved_average) != set(averaged):
            raise CacheError(f"{directory}: saved moving average holds other weights than this run; start afresh")
        for name, value in averaged.items():
            value.copy_(saved_average[name].to(value.device, value.dtype))
    torch.set_rng_state(moments["__torch_rng__"])
    if "__cuda_rng__" in moments and torch.cuda.is_available():
        torch.cuda.set_rng_state(moments["__cuda_rng__"])
    return int(meta["step"])


def adapt(
    base: str | Path | MiniReranker,
    tasks: Sequence[RerankTask],
    target: RerankConfig,
    out: str | Path,
    settings: AdaptSettings | None = None,
    *,
    device: str = "cpu",
    resume: bool = True,
    teacher_cache: str | Path | None = None,
    stop_after: int | None = None,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    base_name: str | None = None,
) -> AdaptResult:
    """Adapt ``base`` (a checkpoint path, hub id or a loaded reranker, whose weights are then changed) to the
    fast configuration ``target`` on ``tasks`` by self-distillation from its dense run, and write ``out``.

    Args:
        base: the checkpoint to adapt; its dense run is the teacher and, for embedder-guided pruning, the
            embedder that ranks visual tokens (recorded in ``adapt.json`` so the output loads with it).
        tasks: (query, candidate list) groups; labels are used only with ``settings.label_weight > 0``.
        target: the fast configuration to train (checked against the model's depth).
        out: output folder (created); a previous run's ``state/`` there is resumed when ``resume``.
        teacher_cache: where the teacher's scores are cached; default ``out/teacher_scores.safetensors``.
        stop_after: stop after this many optimizer steps in total (an interrupted run; resumable), without
            writing the final checkpoint.
        on_step: called with (step, loss) after each optimizer step.
        base_name: how ``adapt.json`` names the base (and embedder) checkpoint; default: ``base`` as given.

    Raises:
        InputError: no tasks, or a task with fewer than two candidates.
        ConfigError: bad settings, or a ``target`` that does not fit the model.
        CacheError: a teacher cache or saved state that does not belong to this run.
    """
    settings = settings or AdaptSettings()
    settings.check()
    if not tasks:
        raise InputError("no tasks to adapt on; give at least one (query, candidates) group")
    for task in tasks:
        if len(task.candidates) < 2:
            raise InputError(f"task {task.id!r} has {len(task.candidates)} candidate; a group needs at least 2")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = AdaptResult()
    dev = torch.device(device)

    if isinstance(base, MiniReranker):
        backbone = base.backbone
        base_name = base_name or str(getattr(backbone, "name", "reranker"))
    else:
        backbone, base_name = load_backbone(base, device=device), base_name or str(base)
    if Path(base_name).exists():  # a local base is recorded absolute: the output may be loaded from anywhere
        base_name = str(Path(base_name).resolve())
    frozen = copy.deepcopy(backbone)  # the teacher and the pruning embedder: the weights we start from
    for p in frozen.model.parameters():
        p.requires_grad_(False)
    frozen.model.eval()
    target = target.resolve(backbone.num_layers)
    teacher = MiniReranker(frozen, "dense")
    student = MiniReranker(backbone, target, embedder=frozen)

    started = time.perf_counter()
    cache_path = Path(teacher_cache) if teacher_cache is not None else out / TEACHER_FILE
    unique = list({id(task): task for task in tasks}.values())  # a task repeated in the mix is scored once
    unique_scores, result.teacher_cache_hit = teacher_scores(
        teacher, unique, cache_path, batch_pairs=settings.teacher_batch, progress=progress
    )
    by_task = {id(task): s for task, s in zip(unique, unique_scores)}
    scores = [by_task[id(task)] for task in tasks]
    result.teacher_seconds = time.perf_counter() - started
    result.teacher_cache, result.teacher_cache_bytes = cache_path, cache_path.stat().st_size

    model = backbone.model
    torch.manual_seed(settings.seed)  # LoRA's initial weights are drawn: a run is a function of its seed
    if settings.method == "lora":
        _add_lora(model, settings)
    else:
        for name, p in model.named_parameters():
            p.requires_grad_(settings.train_vision or ".visual." not in f".{name}")
    trainable = _trainable(model)
    params = list(trainable.values())
    # The moving average starts at the weights we start from; a resumed run reads it back from the state.
    averaged = {k: p.detach().clone() for k, p in trainable.items()} if settings.ema > 0 else None
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate(), weight_decay=settings.weight_decay)

    def schedule(step: int) -> float:  # linear warm-up, cosine decay to 10%
        if step < settings.warmup_steps:
            return (step + 1) / settings.warmup_steps
        done = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
        return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, done)))

    state_dir = out / STATE_DIR
    start = 0
    if resume and (state_dir / "state.json").is_file():
        start = _load_state(state_dir, model, optimizer, settings, averaged)
        logger.info("resuming from step %d (%s)", start, state_dir)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: schedule(s + start))
    end = settings.steps if stop_after is None else min(settings.steps, stop_after)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda")
    model.train()
    t0 = time.perf_counter()
    step = start
    bar = tqdm(range(start, end), disable=not progress, desc="adapt", unit="step", initial=0)
    try:
        for step in bar:
            optimizer.zero_grad(set_to_none=True)
            total = 0.0
            for micro in range(settings.grad_accum):
                pairs, teacher_logits, labels = _batch(tasks, scores, settings, step, micro)
                with autocast:
                    logits = student.logits(pairs, fast=True).float().view(teacher_logits.shape)
                loss = adapt_loss(
                    logits,
                    teacher_logits.to(logits.device),
                    settings,
                    labels.to(logits.device) if labels is not None else None,
                )
                (loss / settings.grad_accum).backward()
                total += float(loss.detach()) / settings.grad_accum
            torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
            optimizer.step()
            lr_schedule.step()
            if averaged is not None:
                with torch.no_grad():
                    for name, p in trainable.items():
                        averaged[name].lerp_(p.detach(), 1.0 - settings.ema)
            result.losses.append(total)
            window = result.losses[-20:]
            bar.set_postfix(loss=f"{sum(window) / len(window):.4f}")
            if on_step is not None:
                on_step(step, total)
            if (step + 1) % settings.save_every == 0 and step + 1 < end:
                _save_state(state_dir, model, optimizer, step + 1, settings, averaged)
        step = end
    finally:
        model.eval()
        backbone.invalidate_fingerprint()
    result.train_seconds = time.perf_counter() - t0
    result.steps_done = end
    if end < settings.steps:  # interrupted on purpose: keep the state, write no checkpoint
        if end > start:
            _save_state(state_dir, model, optimizer, end, settings, averaged)
        return result
    _save_state(state_dir, model, optimizer, end, settings, averaged)
    if averaged is not None:  # the average is what is served; the state keeps the last weights to resume from
        with torch.no_grad():
            for name, p in trainable.items():
                p.copy_(averaged[name])
        backbone.invalidate_fingerprint()
    if settings.method == "lora":
        result.lora = _save_lora_folder(model, out / LORA_DIR, settings, target, base_name)
        _merge_lora(model)
        backbone.invalidate_fingerprint()
    save_checkpoint(student, out)
    (out / CONFIG_FILE).write_text(target.model_dump_json(indent=1) + "\n", encoding="utf-8")
    record = {
        "base": base_name,
        "embedder": base_name if target.keep_ratio < 1 and target.pruning_guide == "embedder" else None,
        "target": target.model_dump(mode="json"),
        "settings": asdict(settings),
        "tasks": len(tasks),
        "family_mix": dict(Counter(task.family for task in tasks)),  # groups per family, repeats included
        "labelled_loss": settings.label_weight > 0,
        "teacher_seconds": round(result.teacher_seconds, 1),
        "teacher_cache_hit": result.teacher_cache_hit,  # read from an earlier run's cache: seconds are a read's
        "train_seconds": round(result.train_seconds, 1),
        "teacher_cache_bytes": result.teacher_cache_bytes,
        "final_loss": sum(result.losses[-50:]) / max(1, len(result.losses[-50:])) if result.losses else None,
    }
    (out / ADAPT_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    result.checkpoint, result.finished = out, True
    return result


def _save_lora_folder(
    model: torch.nn.Module, folder: Path, settings: AdaptSettings, target: RerankConfig, base: str
) -> Path:
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(model)
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(folder / _LORA_WEIGHTS))
    meta = {
        "base": base,
        "rank": settings.lora_rank,
        "alpha": settings.lora_alpha,
        "train_vision": settings.train_vision,
    }
    (folder / _LORA_CONFIG).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    (folder / CONFIG_FILE).write_text(target.model_dump_json(indent=1) + "\n", encoding="utf-8")
    return folder


def load_adapter(
    base: str | Path, adapter: str | Path, *, device: str = "cpu", dtype: str | torch.dtype = "float32"
) -> MiniReranker:
    """The reranker of ``base`` weights plus the LoRA folder ``adapter`` (``<adapt out>/lora``), merged,
    under the configuration saved with the adapter; the base weights guide embedder pruning.

    Raises:
        ModelLoadError: ``adapter`` is not a LoRA folder written by :func:`adapt`, or does not fit ``base``.
    """
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from ..errors import ModelLoadError

    folder = Path(adapter)
    if not (folder / _LORA_WEIGHTS).is_file() or not (folder / _LORA_CONFIG).is_file():
        raise ModelLoadError(f"{folder}: not a LoRA folder (needs {_LORA_WEIGHTS} and {_LORA_CONFIG})")
    meta = json.loads((folder / _LORA_CONFIG).read_text(encoding="utf-8"))
    backbone = load_backbone(base, device=device, dtype=dtype)
    embedder = copy.deepcopy(backbone)
    settings = AdaptSettings(
        lora_rank=int(meta["rank"]), lora_alpha=int(meta["alpha"]), train_vision=bool(meta["train_vision"])
    )
    _add_lora(backbone.model, settings)
    result = set_peft_model_state_dict(backbone.model, load_file(str(folder / _LORA_WEIGHTS)))
    if getattr(result, "unexpected_keys", None):
        raise ModelLoadError(f"{folder}: LoRA weights for modules {base!r} lacks: {result.unexpected_keys[:3]}")
    _merge_lora(backbone.model)
    backbone.model.eval()
    backbone.invalidate_fingerprint()
    config = RerankConfig.model_validate_json((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    return MiniReranker(backbone, config, embedder=embedder)


def labelled(tasks: Sequence[RerankTask]) -> bool:
    """Whether every task carries relevance labels."""
    return all(task.labelled for task in tasks)


def repeat_families(tasks: Sequence[RerankTask], repeats: Mapping[str, int]) -> list[RerankTask]:
    """``tasks`` with each task of a family in ``repeats`` present that many times (the training mix)."""
    out: list[RerankTask] = []
    for task in tasks:
        out += [task] * max(1, int(repeats.get(task.family, 1)))
    return out
