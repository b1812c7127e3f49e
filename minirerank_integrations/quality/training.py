"""Supervised point-wise yes/no training of a Qwen3-VL reranker from labelled tasks (how the demo model was
trained from scratch). Adapting a checkpoint to a fast configuration is :mod:`.adapt`; LoRA adapters and the
learning-rate schedule, shared by both, are in :mod:`.lora`.

The forward pass is :meth:`MiniReranker.logits`: the definition of the current configuration (format, band
masks, exit layer, pruned tokens), computed by default through the same decomposition that serving uses, so
what is trained is exactly what the fast path serves, at the fast path's cost.

Each step scores groups of candidates for a few queries. The loss is a listwise softmax cross-entropy over
each group (all positives together against the negatives; it gives a from-scratch model a ranking signal
long before point-wise BCE moves off 0.693) plus the point-wise binary cross-entropy on
sigmoid(logit yes - logit no) that the model is finally used with. The weights that learn are those with
``requires_grad`` (all of them, or LoRA adapters after :func:`~minirerank_integrations.quality.lora.add_lora`).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from ..engine.reranker import MiniReranker
from ..errors import InputError
from .data.tasks import RerankTask, attribute_distance
from .lora import lr_schedule
from .settings import TrainSettings

logger = logging.getLogger(__name__)


@dataclass
class TrainReport:
    """Losses and seconds per optimizer step."""

    losses: list[float] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)

    @property
    def mean_step_seconds(self) -> float:
        timed = self.step_seconds[1:] or self.step_seconds  # the first step pays for warm-up
        return sum(timed) / max(1, len(timed))


def sample_group(task: RerankTask, size: int, hard_share: float, rng: random.Random) -> list[int]:
    """Candidate indices for one training group: one to all positives, then negatives, ``hard_share`` of
    them one attribute away from a positive (when attributes are known)."""
    positives = [i for i, r in enumerate(task.relevance) if r > 0]
    negatives = [i for i, r in enumerate(task.relevance) if r <= 0]
    chosen = rng.sample(positives, k=min(len(positives), max(1, size // 4)))
    if task.candidate_attributes and task.query_attributes:
        hard = [i for i in negatives if attribute_distance(task.candidate_attributes[i], task.query_attributes) == 1]
        easy = [i for i in negatives if i not in set(hard)]
    else:
        hard, easy = [], negatives
    if len(task.candidates) < size:
        raise InputError(f"task {task.id!r} has {len(task.candidates)} candidates; groups need {size}")
    n_neg = min(size - len(chosen), len(negatives))
    n_hard = min(len(hard), round(hard_share * n_neg))
    picked = rng.sample(hard, n_hard) + rng.sample(easy, min(len(easy), n_neg - n_hard))
    if len(picked) < n_neg:  # not enough of one kind: top up from the rest
        rest = [i for i in negatives if i not in set(picked)]
        picked += rng.sample(rest, n_neg - len(picked))
    return chosen + picked


def group_loss(logits: torch.Tensor, labels: torch.Tensor, settings: TrainSettings) -> torch.Tensor:
    """Listwise (all positives vs the group) + point-wise BCE; ``logits`` and ``labels`` are [groups, size]."""
    log_probs = F.log_softmax(logits, dim=-1)  # [groups, size]
    listwise = -(torch.logsumexp(log_probs.masked_fill(labels <= 0, float("-inf")), dim=-1)).mean()
    bce = F.binary_cross_entropy_with_logits(logits, labels.float())
    return settings.listwise_weight * listwise + settings.bce_weight * bce


def training_step(
    reranker: MiniReranker,
    optimizer: torch.optim.Optimizer,
    pairs: Sequence[tuple],
    labels: Sequence[Sequence[int]],
    settings: TrainSettings,
) -> float:
    """One optimizer step on groups of pairs (``labels`` is [groups][size], pairs in the same order)."""
    logits = reranker.logits(pairs, fast=settings.fast_path).view(len(labels), -1)  # [groups, size]
    loss = group_loss(logits, torch.tensor(labels, device=logits.device), settings)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
    optimizer.step()
    return float(loss.detach())


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The weights of ``model`` that learn (``requires_grad``)."""
    return [p for p in model.parameters() if p.requires_grad]


def train(
    reranker: MiniReranker,
    tasks: Sequence[RerankTask],
    settings: TrainSettings,
    *,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainReport:
    """Train ``reranker``'s weights (those with ``requires_grad``) under its current configuration on the
    labelled ``tasks``.

    Raises:
        InputError: a task with fewer candidates than ``settings.candidates_per_query``.
    """
    rng = random.Random(settings.seed)
    torch.manual_seed(settings.seed)
    model = reranker.backbone.model
    params = trainable_parameters(model)
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    schedule = lr_schedule(optimizer, settings.warmup_steps, settings.steps)
    report = TrainReport()
    started = time.perf_counter()
    order = list(range(len(tasks)))
    rng.shuffle(order)
    model.train()
    bar = tqdm(range(settings.steps), disable=not progress, desc="train", unit="step")
    try:
        for step in bar:
            t0 = time.perf_counter()
            ramp = min(1.0, step / max(1, 0.6 * settings.steps))
            hard_share = settings.hard_start + (settings.hard_end - settings.hard_start) * ramp
            pairs, labels = [], []
            for g in range(settings.queries_per_step):
                task = tasks[order[(step * settings.queries_per_step + g) % len(order)]]
                group = sample_group(task, settings.candidates_per_query, hard_share, rng)
                pairs += [(task.query, task.candidates[i]) for i in group]
                labels.append([1 if task.relevance[i] > 0 else 0 for i in group])
            loss = training_step(reranker, optimizer, pairs, labels, settings)
            schedule.step()
            report.losses.append(loss)
            report.step_seconds.append(time.perf_counter() - t0)
            bar.set_postfix(loss=f"{sum(report.losses[-20:]) / len(report.losses[-20:]):.4f}", hard=f"{hard_share:.2f}")
            if on_step is not None:
                on_step(step, loss)
            if settings.time_limit_s is not None and time.perf_counter() - started > settings.time_limit_s:
                logger.info("time limit reached after %d steps", step + 1)
                break
    finally:
        model.eval()
        reranker.backbone.invalidate_fingerprint()  # weights changed: old cache keys must not match
    return report


def vision_warm_start(
    reranker: MiniReranker,
    images: Sequence[Image.Image],
    attributes: Sequence[Mapping[str, str]],
    *,
    steps: int = 1000,
    batch_size: int = 64,
    lr: float = 2e-3,
    temperature: float = 10.0,
    seed: int = 0,
    time_limit_s: float | None = None,
    on_step: Callable[[int, float, float], None] | None = None,
) -> TrainReport:
    """Supervised warm start of the vision tower on labelled images (e.g. the generator's attributes).

    Each image's mean merged token is compared (cosine x ``temperature``) with the decoder's embeddings
    of its attribute words, one softmax per attribute over that attribute's values. The vision tower and
    merger learn; word embeddings stay fixed. Image tokens then reach the decoder close to the words that
    describe them, which a reranker trained from scratch otherwise spends thousands of steps discovering.
    ``on_step(step, loss, accuracy)`` gets the batch's share of correctly predicted attributes.
    """
    backbone = reranker.backbone
    names = sorted({name for attrs in attributes for name in attrs})
    values = {name: sorted({a[name] for a in attributes if name in a}) for name in names}
    with torch.no_grad():
        words = {
            name: torch.stack(
                [
                    F.normalize(backbone.embed_tokens(_word_ids(backbone, v)).float().mean(0), dim=-1)
                    for v in values[name]
                ]
            )  # [values, hidden]
            for name in names
        }
    targets = {
        name: torch.tensor([values[name].index(a.get(name, values[name][0])) for a in attributes]) for name in names
    }
    present = {name: torch.tensor([name in a for a in attributes]) for name in names}
    prepared = [backbone.prepared_image(im, str(i)) for i, im in enumerate(images)]

    rng = random.Random(seed)
    params = [p for p in backbone.visual.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    report = TrainReport()
    started = time.perf_counter()
    backbone.model.train()
    try:
        for step in range(steps):
            t0 = time.perf_counter()
            batch = rng.sample(range(len(images)), min(batch_size, len(images)))
            pooled = torch.stack(
                [
                    F.normalize(feats.float().mean(0), dim=-1)
                    for feats, _ in backbone.encode_images([prepared[i] for i in batch])
                ]
            )  # [batch, hidden]
            loss, correct, total = pooled.new_zeros(()), 0, 0
            for name in names:
                rows = torch.tensor(batch)[present[name][batch]]
                if len(rows) == 0:
                    continue
                mask = present[name][batch].to(pooled.device)
                logits = temperature * pooled[mask] @ words[name].to(pooled.device).T  # [rows, values]
                target = targets[name][rows].to(pooled.device)
                loss = loss + F.cross_entropy(logits, target)
                correct += int((logits.argmax(-1) == target).sum())
                total += len(rows)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            report.losses.append(float(loss.detach()))
            report.step_seconds.append(time.perf_counter() - t0)
            if on_step is not None:
                on_step(step, report.losses[-1], correct / max(1, total))
            if time_limit_s is not None and time.perf_counter() - started > time_limit_s:
                break
    finally:
        backbone.model.eval()
        backbone.invalidate_fingerprint()
    return report


def _word_ids(backbone, word: str) -> torch.Tensor:
    """Token ids of ``word`` as it appears inside a sentence (after a space)."""
    return torch.tensor(backbone.tokenizer.encode(" " + word, add_special_tokens=False), device=backbone.device)


def save_checkpoint(reranker: MiniReranker, directory: str | Path) -> Path:
    """Save model, tokenizer and image processor so ``MiniReranker.from_pretrained`` loads it back."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    b = reranker.backbone
    b.model.save_pretrained(directory)
    b.tokenizer.save_pretrained(directory)
    b.image_processor.save_pretrained(directory)
    return directory
