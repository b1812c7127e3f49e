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
import hashlib
import json
import logging
import math
import os
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
from ..errors import CacheError, ConfigError, InputError, ScoreError, TrainingError
from .data.tasks import RerankTask
from .lora import LORA_CONFIG, LORA_WEIGHTS, add_lora, load_lora, lr_schedule, merge_lora, save_lora
from .settings import AdaptSettings
from .training import save_checkpoint

__all__ = [
    "ADAPT_FILE",
    "LORA_DIR",
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
TEACHER_FILE = "teacher_scores.safetensors"
EMA_FILE = "ema.safetensors"  # in STATE_DIR: the moving average of the trained weights, when settings.ema > 0


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
        ScoreError: a teacher score is not finite (nothing is cached then).
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
    bad = (~torch.isfinite(values)).nonzero()
    if len(bad):  # a NaN target would reach every weight at the first step
        i, j = pairs[int(bad[0])]
        raise ScoreError(
            f"the teacher's score of task {tasks[i].id!r}, candidate {j} is {float(values[int(bad[0])])}: "
            f"{len(bad)} of {len(values)} teacher scores are not finite; load the teacher in float32"
        )
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
        json.dumps({"step": step, "adam_steps": counts, "settings": settings.model_dump()}, indent=1), encoding="utf-8"
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


# Settings a resumed run may change: its length (the schedule's remaining decay follows), how often it saves,
# and how many pairs or teacher pairs go through the model at once (the results do not depend on those).
_RESUMABLE_CHANGES = {"steps", "save_every", "micro_batch_pairs", "teacher_batch"}


def _load_state(
    directory: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    settings: AdaptSettings,
    averaged: dict[str, torch.Tensor] | None = None,
) -> int:
    from safetensors.torch import load_file

    meta = json.loads((directory / "state.json").read_text(encoding="utf-8"))
    saved, current = meta.get("settings", {}), settings.model_dump()
    defaults = AdaptSettings().model_dump()  # a setting added since the state was written had its default then
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
    trainable = _trainable(model)
    params = list(trainable.values())
    # The moving average starts at the weights we start from; a resumed run reads it back from the state.
    averaged = {k: p.detach().clone() for k, p in trainable.items()} if settings.ema > 0 else None
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate(), weight_decay=settings.weight_decay)

    state_dir = out / STATE_DIR
    start = 0
    if resume and (state_dir / "state.json").is_file():
        start = _load_state(state_dir, model, optimizer, settings, averaged)
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
                    for name, p in trainable.items():
                        averaged[name].lerp_(p.detach(), 1.0 - settings.ema)
            result.losses.append(total)
            window = result.losses[-20:]
            bar.set_postfix(loss=f"{sum(window) / len(window):.4f}")
            if on_step is not None:
                on_step(step, total)
            if (step + 1) % settings.save_every == 0 and step + 1 < end:
                _save_state(state_dir, model, optimizer, step + 1, settings, averaged)
    finally:
        optimizer.zero_grad(set_to_none=True)  # a failed step's gradients are dropped, not left on the weights
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
