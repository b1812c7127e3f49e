"""Label-free adaptation of a Qwen3-VL reranker to a fast configuration, by self-distillation.

The teacher is the checkpoint itself run dense (official query-first prompt, every layer, every token); the
student is the same weights under the fast configuration (vision-first, early exit, interaction band, visual
token pruning). On the user's (query, candidate list) groups the student learns to reproduce the teacher's
scores and order, so no relevance labels are needed; labels, when the tasks carry them, can be added.

- The teacher scores every candidate of every task once, before training, and the scores are cached on
  disk (safetensors, keyed by the teacher's weight digest and the tasks' content), so epochs and resumed
  runs never run the teacher again (:mod:`.teacher`).
- Each training group is the teacher's top candidates of a task plus others drawn from its list: the
  negatives the teacher finds hardest are always present, without labels.
- Loss: KL divergence from the teacher's softmax over the group (its order) plus a point-wise binary
  cross-entropy towards sigmoid(teacher logit) (its scores); optionally the labels' listwise + BCE loss.
- LoRA through ``peft`` (merged at the end, so serving pays nothing for it; :mod:`.lora`) or full
  fine-tuning; the vision tower is frozen unless asked for. Settings: :class:`AdaptSettings` (:mod:`.settings`).
- Resumable: every ``save_every`` steps the trainable weights, the optimizer, the step and the RNG state are
  written (safetensors + JSON, :mod:`.adapt_state`); a run resumed from them continues exactly as the
  uninterrupted run would.
- Safe on a GPU: under bfloat16 autocast the score head still runs in float32; the pairs of a step go through
  forward and backward ``micro_batch_pairs`` at a time (whole groups, gradients accumulated), so peak memory
  is bounded whatever the step's size; a non-finite loss or gradient stops the run with a
  :class:`~minirerank_integrations.errors.TrainingError` before anything of that step is applied or saved.

Outputs of :func:`adapt` in its output folder: the merged checkpoint (``from_pretrained`` loads it with its
``minirerank_config.json``), ``lora/`` (the adapter alone, see :func:`load_adapter`), ``adapt.json`` (the
settings, the time taken, the cache size), ``teacher_scores.safetensors`` and ``state/``.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..engine.config import RerankConfig
from ..engine.modeling import ADAPT_FILE, CONFIG_FILE, Backbone, load_backbone
from ..engine.reranker import MiniReranker
from ..errors import ConfigError, InputError, TrainingError
from .adapt_state import load_state, save_state, trainable
from .data.tasks import RerankTask
from .lora import LORA_CONFIG, LORA_WEIGHTS, add_lora, load_lora, lr_schedule, merge_lora, save_lora
from .settings import AdaptSettings
from .teacher import TEACHER_FILE, task_digest, teacher_scores
from .training import save_checkpoint

__all__ = [
    "ADAPT_FILE",
    "LORA_DIR",
    "TEACHER_FILE",
    "AdaptResult",
    "AdaptSettings",
    "adapt",
    "adapt_loss",
    "check_output_folder",
    "load_adapter",
    "task_digest",
    "teacher_scores",
]

logger = logging.getLogger(__name__)

LORA_DIR = "lora"
STATE_DIR = "state"


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
    ``labels`` are given; each term a mean over the batch's groups (the listwise one over groups with a
    positive).
    """
    return _loss_share(student, teacher, settings, labels, _loss_totals(teacher, settings, labels))


def _loss_totals(teacher: torch.Tensor, settings: AdaptSettings, labels: torch.Tensor | None) -> tuple[int, int]:
    """The counts :func:`adapt_loss` averages over: groups, and groups with a positive label."""
    positive = int((labels > 0).any(dim=-1).sum()) if labels is not None and settings.label_weight > 0 else 0
    return teacher.shape[0], positive


def _loss_share(
    student: torch.Tensor,
    teacher: torch.Tensor,
    settings: AdaptSettings,
    labels: torch.Tensor | None,
    totals: tuple[int, int],
) -> torch.Tensor:
    """The share of some of a batch's groups in :func:`adapt_loss` of the whole batch, whose ``totals`` are
    given (:func:`_loss_totals`): the shares of disjoint slices of groups add up to the batch's loss, so a step
    can run its groups a few at a time and accumulate gradients."""
    groups, positive = totals
    elements = groups * student.shape[-1]  # the point-wise terms are means over every pair of the batch
    t = settings.temperature
    kl = F.kl_div(
        F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1), log_target=True, reduction="sum"
    )
    loss = settings.distill_weight * t * t * kl / groups
    if settings.score_weight > 0:
        bce = F.binary_cross_entropy_with_logits(student, torch.sigmoid(teacher), reduction="sum")
        loss = loss + settings.score_weight * bce / elements
    if labels is not None and settings.label_weight > 0:
        log_probs = F.log_softmax(student, dim=-1)
        has_positive = (labels > 0).any(dim=-1)
        listwise = -torch.logsumexp(log_probs.masked_fill(labels <= 0, float("-inf")), dim=-1)[has_positive]
        label_bce = F.binary_cross_entropy_with_logits(student, (labels > 0).float(), reduction="sum")
        label_term = (listwise.sum() / positive if positive else student.new_zeros(())) + 0.2 * label_bce / elements
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
) -> tuple[list[tuple], torch.Tensor, torch.Tensor | None, list[str]]:
    """Pairs, teacher logits [groups, size], labels (or None) and task ids of one micro-batch of groups; a pure
    function of the step, so a resumed run draws exactly the groups the uninterrupted run would."""
    n = len(tasks)
    per_step = settings.queries_per_step * settings.grad_accum
    rng = _step_rng(settings.seed, step, micro)
    size = min(settings.group_size, min(len(t.candidates) for t in tasks))
    pairs, teacher, labels, ids = [], [], [], []
    for g in range(settings.queries_per_step):
        position = step * per_step + micro * settings.queries_per_step + g
        index = _task_order(n, settings.seed, position // n)[position % n]
        task = tasks[index]
        group = sample_group(scores[index], size, min(settings.teacher_top, size), rng)
        pairs += [(task.query, task.candidates[j]) for j in group]
        teacher.append(scores[index][group])
        labels.append([task.relevance[j] for j in group])
        ids.append(task.id)
    labelled = settings.label_weight > 0 and all(t.labelled for t in tasks)
    return pairs, torch.stack(teacher), torch.tensor(labels) if labelled else None, ids


def _accumulate(
    student: MiniReranker,
    tasks: Sequence[RerankTask],
    scores: Sequence[torch.Tensor],
    settings: AdaptSettings,
    step: int,
    autocast: torch.autocast,
) -> float:
    """Forward and backward every group of optimizer step ``step``, ``settings.groups_per_pass()`` groups at
    a time, gradients accumulated; returns the step's loss.

    Raises:
        TrainingError: a non-finite loss (before its backward pass: no gradient of it is kept).
    """
    total = 0.0
    per_pass = settings.groups_per_pass()
    for micro in range(settings.grad_accum):
        pairs, teacher_logits, labels, ids = _batch(tasks, scores, settings, step, micro)
        totals = _loss_totals(teacher_logits, settings, labels)
        groups, size = teacher_logits.shape
        for first in range(0, groups, per_pass):
            last = min(groups, first + per_pass)
            with autocast:  # the score head inside runs in float32 all the same (engine/layers.py)
                logits = student.logits(pairs[first * size : last * size], fast=True).float()
            logits = logits.view(last - first, size)  # [groups in this pass, size]
            device = logits.device
            loss = _loss_share(
                logits,
                teacher_logits[first:last].to(device),
                settings,
                labels[first:last].to(device) if labels is not None else None,
                totals,
            )
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingError(
                    f"step {step + 1}: the loss is {value} on the groups of tasks {ids[first:last]}; the run stops "
                    "before this step changes any weight (lower --lr or --grad-clip, or adapt in float32)"
                )
            (loss / settings.grad_accum).backward()
            total += value / settings.grad_accum
    return total


def _frozen_copy(backbone: Backbone) -> Backbone:
    """A copy of ``backbone``'s weights that training leaves alone (tokenizer and image processor shared)."""
    model = copy.deepcopy(backbone.model)
    for p in model.parameters():
        p.requires_grad_(False)
    return Backbone(model, backbone.tokenizer, backbone.image_processor, backbone.name)


def check_output_folder(
    out: str | Path, base: str | Path | None = None, *, overwrite: bool = False, resume: bool = True
) -> Path:
    """Refuse an output folder that would overwrite the checkpoint it adapts, or someone's files.

    ``out`` (symbolic links and ``..`` resolved) may not be the local ``base`` folder nor lie inside it. A
    non-empty ``out`` is refused unless ``overwrite``, or unless it holds an earlier run of :func:`adapt` (its
    ``state/`` or teacher-score cache) and ``resume``: that run is continued, as documented.

    Returns:
        ``out`` resolved.

    Raises:
        ConfigError: naming the folder and the fix.
    """
    given = Path(out).expanduser()
    folder = given.resolve()
    if base is not None and Path(base).expanduser().exists():
        model = Path(base).expanduser().resolve()
        if folder == model or model in folder.parents:
            where = "is" if folder == model else "is inside"
            raise ConfigError(
                f"output folder {str(given)!r} {where} the model folder {str(base)!r} ({model}): adapting would "
                "write over the checkpoint it starts from; choose an output folder outside it"
            )
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"output folder {str(given)!r} is a file; choose a folder")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        earlier_run = (folder / STATE_DIR / "state.json").is_file() or (folder / TEACHER_FILE).is_file()
        if not (resume and earlier_run):
            what = "an earlier adapt run (resuming is off)" if earlier_run else "files"
            raise ConfigError(
                f"output folder {str(given)!r} already holds {what}; choose an empty folder, "
                "or pass --overwrite (overwrite=True) to write into it"
            )
    return folder


def adapt(
    base: str | Path | MiniReranker,
    tasks: Sequence[RerankTask],
    target: RerankConfig,
    out: str | Path,
    settings: AdaptSettings | None = None,
    *,
    device: str | torch.device | None = None,
    resume: bool = True,
    overwrite: bool = False,
    teacher_cache: str | Path | None = None,
    stop_after: int | None = None,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    base_name: str | None = None,
) -> AdaptResult:
    """Adapt ``base`` (a checkpoint path, hub id or a loaded reranker, whose weights are then changed) to the
    fast configuration ``target`` on ``tasks`` by self-distillation from its dense run, and write ``out``.

    ``minirerank adapt`` is this function; its folder loads with ``MiniReranker.from_pretrained(out)`` under
    ``target`` (saved as ``minirerank_config.json``), the base weights guiding embedder pruning.

    Args:
        base: the checkpoint to adapt; its dense run is the teacher and, for embedder-guided pruning, the
            embedder that ranks visual tokens (recorded in ``adapt.json`` so the output loads with it). A path
            or hub id is loaded in float32 (trained under bfloat16 autocast on CUDA).
        tasks: (query, candidate list) groups; labels are used only with ``settings.label_weight > 0``.
        target: the fast configuration to train (checked against the model's depth).
        out: output folder (created); see :func:`check_output_folder` for what it may hold already. A previous
            run's ``state/`` there is resumed when ``resume``.
        device: where to train; default: the device of ``base`` when it is a loaded reranker, else ``"cpu"``.
        overwrite: write into a non-empty ``out`` that holds no earlier run of this function.
        teacher_cache: where the teacher's scores are cached; default ``out/teacher_scores.safetensors``.
        stop_after: stop after this many optimizer steps in total (an interrupted run; resumable), without
            writing the final checkpoint.
        on_step: called with (step, loss) after each optimizer step.
        base_name: how ``adapt.json`` names the base (and embedder) checkpoint; default: ``base`` as given.

    Raises:
        InputError: no tasks, or a task with fewer than two candidates.
        ConfigError: a ``target`` that does not fit the model, an output folder refused by
            :func:`check_output_folder`, or a ``device`` other than the loaded ``base``'s.
        CacheError: a teacher cache or saved state that does not belong to this run.
        ScoreError: a teacher score that is not finite.
        TrainingError: a step's loss or gradient is not finite; the run stops before that step changes a weight,
            and ``out/state/`` keeps the last state saved before it.
    """
    settings = settings or AdaptSettings()
    if not tasks:
        raise InputError("no tasks to adapt on; give at least one (query, candidates) group")
    for task in tasks:
        if len(task.candidates) < 2:
            raise InputError(f"task {task.id!r} has {len(task.candidates)} candidate; a group needs at least 2")
    if isinstance(base, MiniReranker):
        backbone = base.backbone
        base_name = base_name or str(getattr(backbone, "name", "reranker"))
        if device is not None and torch.device(device) != backbone.device:
            raise ConfigError(
                f"device={str(device)!r}, but the reranker to adapt is on {backbone.device}; "
                "move it there first or leave device unset"
            )
    else:
        base_name = base_name or str(base)
    out = check_output_folder(out, base_name, overwrite=overwrite, resume=resume)
    if not isinstance(base, MiniReranker):
        backbone = load_backbone(base, device=device or "cpu")
    out.mkdir(parents=True, exist_ok=True)
    result = AdaptResult()
    dev = backbone.device

    if Path(base_name).exists():  # a local base is recorded absolute: the output may be loaded from anywhere
        base_name = str(Path(base_name).resolve())
    frozen = _frozen_copy(backbone)  # the teacher and the pruning embedder: the weights we start from
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
        add_lora(backbone, settings.lora())
    else:
        for name, p in model.named_parameters():
            p.requires_grad_(settings.train_vision or ".visual." not in f".{name}")
    weights = trainable(model)
    params = list(weights.values())
    # The moving average starts at the weights we start from; a resumed run reads it back from the state.
    averaged = {k: p.detach().clone() for k, p in weights.items()} if settings.ema > 0 else None
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate(), weight_decay=settings.weight_decay)

    state_dir = out / STATE_DIR
    start = 0
    if resume and (state_dir / "state.json").is_file():
        start = load_state(state_dir, model, optimizer, settings, averaged)
        logger.info("resuming from step %d (%s)", start, state_dir)
    schedule = lr_schedule(optimizer, settings.warmup_steps, settings.steps, start=start)
    end = settings.steps if stop_after is None else min(settings.steps, stop_after)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda")
    model.train()
    t0 = time.perf_counter()
    bar = tqdm(range(start, end), disable=not progress, desc="adapt", unit="step", initial=0)
    try:
        for step in bar:
            optimizer.zero_grad(set_to_none=True)
            total = _accumulate(student, tasks, scores, settings, step, autocast)
            norm = float(torch.nn.utils.clip_grad_norm_(params, settings.grad_clip))
            if not math.isfinite(norm):  # checked before the optimizer, the average or the state see it
                raise TrainingError(
                    f"step {step + 1}: the gradient norm is {norm}; the run stops before this step changes any "
                    f"weight (the last saved state in {state_dir} is kept; lower --lr or adapt in float32)"
                )
            optimizer.step()
            schedule.step()
            if averaged is not None:
                with torch.no_grad():
                    for name, p in weights.items():
                        averaged[name].lerp_(p.detach(), 1.0 - settings.ema)
            result.losses.append(total)
            window = result.losses[-20:]
            bar.set_postfix(loss=f"{sum(window) / len(window):.4f}")
            if on_step is not None:
                on_step(step, total)
            if (step + 1) % settings.save_every == 0 and step + 1 < end:
                save_state(state_dir, model, optimizer, step + 1, settings, averaged)
    finally:
        optimizer.zero_grad(set_to_none=True)  # a failed step's gradients are dropped, not left on the weights
        model.eval()
        backbone.invalidate_fingerprint()
    result.train_seconds = time.perf_counter() - t0
    result.steps_done = end
    if end < settings.steps:  # interrupted on purpose: keep the state, write no checkpoint
        if end > start:
            save_state(state_dir, model, optimizer, end, settings, averaged)
        return result
    save_state(state_dir, model, optimizer, end, settings, averaged)
    if averaged is not None:  # the average is what is served; the state keeps the last weights to resume from
        with torch.no_grad():
            for name, p in weights.items():
                p.copy_(averaged[name])
        backbone.invalidate_fingerprint()
    if settings.method == "lora":
        result.lora = save_lora(backbone, out / LORA_DIR, settings.lora(), base=base_name)
        (result.lora / CONFIG_FILE).write_text(target.model_dump_json(indent=1) + "\n", encoding="utf-8")
        merge_lora(backbone)
    save_checkpoint(student, out)
    (out / CONFIG_FILE).write_text(target.model_dump_json(indent=1) + "\n", encoding="utf-8")
    record = {
        "base": base_name,
        "embedder": base_name if target.keep_ratio < 1 and target.pruning_guide == "embedder" else None,
        "target": target.model_dump(mode="json"),
        "settings": settings.model_dump(),
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


def load_adapter(
    base: str | Path, adapter: str | Path, *, device: str = "cpu", dtype: str | torch.dtype = "float32"
) -> MiniReranker:
    """The reranker of ``base`` weights plus the LoRA folder ``adapter`` (``<adapt out>/lora``), merged,
    under the configuration saved with the adapter; the base weights guide embedder pruning.

    Raises:
        ModelLoadError: ``adapter`` is not a LoRA folder written by :func:`adapt`, or does not fit ``base``.
    """
    from ..errors import ModelLoadError

    folder = Path(adapter)
    if not (folder / LORA_WEIGHTS).is_file() or not (folder / LORA_CONFIG).is_file():
        raise ModelLoadError(f"{folder}: not a LoRA folder (needs {LORA_WEIGHTS} and {LORA_CONFIG})")
    backbone = load_backbone(base, device=device, dtype=dtype)
    embedder = _frozen_copy(backbone)
    load_lora(backbone, folder)
    merge_lora(backbone)
    backbone.model.eval()
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
