"""Settings of the quality tooling's runs as validated data: :class:`AdaptSettings` (adaptation) with the
:class:`LoraSpec` it holds, and :class:`TrainSettings` (supervised training from scratch).

Kept apart from :mod:`.adapt` and :mod:`.training` and free of torch, so that ``minirerank adapt --help`` builds
its flags from these fields (names, descriptions, defaults) without loading a model library. An invalid value
raises :class:`~minirerank_integrations.errors.ConfigError` naming the field. :class:`CheckedSettings` is the
base every such settings model shares (the benchmark's too).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import ConfigError

__all__ = ["AdaptSettings", "CheckedSettings", "LoraSpec", "TrainSettings"]


class CheckedSettings(BaseModel):
    """A frozen pydantic model whose validation errors are :class:`ConfigError`, in one line naming each field
    (``sizes[0]`` for an item of a sequence)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, **data: object) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(_one_line(type(self).__name__, exc)) from exc


def _one_line(name: str, exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]).lstrip(".")
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return f"invalid {name}: " + "; ".join(parts)


class LoraSpec(CheckedSettings):
    """Where LoRA adapters go and their shape; defaults are the paper's recipe (rank 16, alpha 32)."""

    rank: int = Field(default=16, ge=1, description="LoRA rank (inner dimension of each adapter)")
    alpha: int = Field(default=32, ge=1, description="LoRA alpha; the adapter's output is scaled by alpha / rank")
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0, description="dropout on each adapter's input while training")
    train_vision: bool = Field(
        default=False, description="adapt the vision tower's blocks and mergers too (else only the text decoder)"
    )


class AdaptSettings(CheckedSettings):
    """One adaptation run (:func:`minirerank_integrations.quality.adapt.adapt`, ``minirerank adapt``).

    Defaults follow the paper's LoRA recipe (rank 16, alpha 32, lr 1e-4). ``minirerank adapt`` has one flag per
    field (``queries_per_step`` is ``--queries-per-step``) with these defaults and descriptions.
    """

    steps: int = Field(default=1000, ge=1, description="optimizer steps in all (a resumed run counts the saved ones)")
    queries_per_step: int = Field(default=8, ge=1, description="groups (one query each) per micro-batch of groups")
    grad_accum: int = Field(default=1, ge=1, description="micro-batches of groups per optimizer step")
    micro_batch_pairs: int = Field(
        default=16,
        ge=1,
        description="pairs per forward/backward pass, in whole groups (at least one): bounds peak memory; "
        "the step's gradient does not depend on it (docs/adaptation.md sizes it for the 2B)",
    )
    group_size: int = Field(
        default=8, ge=2, description="candidates per group: the teacher's best --teacher-top, the rest drawn at random"
    )
    teacher_top: int = Field(default=3, ge=1, description="the teacher's best candidates always in a group")
    method: Literal["lora", "full"] = Field(
        default="lora", description="LoRA adapters (merged at the end) or every weight"
    )
    lora_rank: int = Field(default=16, ge=1, description="LoRA rank")
    lora_alpha: int = Field(default=32, ge=1, description="LoRA alpha (the adapter's output is scaled by alpha / rank)")
    lora_dropout: float = Field(default=0.05, ge=0.0, lt=1.0, description="dropout on each LoRA adapter's input")
    train_vision: bool = Field(default=False, description="train the vision tower too (frozen by default)")
    lr: float | None = Field(default=None, gt=0.0, description="peak learning rate; default 1e-4 (lora) or 3e-4 (full)")
    warmup_steps: int = Field(default=20, ge=0, description="steps of linear warm-up before the cosine decay to 10%")
    weight_decay: float = Field(default=0.01, ge=0.0, description="AdamW weight decay")
    grad_clip: float = Field(default=1.0, gt=0.0, description="gradient norm clipped to this before each step")
    distill_weight: float = Field(
        default=1.0, ge=0.0, description="weight of the KL from the teacher's softmax per group"
    )
    score_weight: float = Field(default=0.2, ge=0.0, description="weight of the BCE towards sigmoid(teacher logit)")
    temperature: float = Field(
        default=1.0,
        gt=0.0,
        description="softmax temperature of the distillation (below 1: the top of the order weighs more)",
    )
    label_weight: float = Field(
        default=0.0, ge=0.0, description="weight of the labels' listwise + 0.2 x BCE loss (tasks must carry relevance)"
    )
    save_every: int = Field(default=100, ge=1, description="write the resumable state every this many steps")
    ema: float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        description="serve a moving average of the trained weights with this decay per step (e.g. 0.998; 0: off)",
    )
    seed: int = Field(default=0, description="seed of the LoRA init, the groups drawn and dropout")
    teacher_batch: int = Field(default=32, ge=1, description="pairs per forward pass of the teacher")

    @model_validator(mode="after")
    def _check(self) -> AdaptSettings:
        if self.teacher_top > self.group_size:
            raise ValueError(f"teacher_top ({self.teacher_top}) must not exceed group_size ({self.group_size})")
        return self

    def learning_rate(self) -> float:
        """``lr``, or the method's default: 1e-4 for LoRA (the paper's), 3e-4 for full fine-tuning."""
        return self.lr if self.lr is not None else (1e-4 if self.method == "lora" else 3e-4)

    def lora(self) -> LoraSpec:
        """The LoRA adapters these settings train."""
        return LoraSpec(
            rank=self.lora_rank, alpha=self.lora_alpha, dropout=self.lora_dropout, train_vision=self.train_vision
        )

    def groups_per_pass(self) -> int:
        """Groups per forward/backward pass: ``micro_batch_pairs`` in whole groups, at least one."""
        return max(1, self.micro_batch_pairs // self.group_size)


class TrainSettings(CheckedSettings):
    """One supervised training run (:func:`minirerank_integrations.quality.training.train`).

    Odd default: lr 1e-3 suits a from-scratch tiny model (adaptation, :class:`AdaptSettings`, uses the paper's
    1e-4).
    """

    steps: int = Field(default=1000, ge=1, description="optimizer steps in all, steps")
    queries_per_step: int = Field(default=8, ge=1, description="groups (one query each) per optimizer step, queries")
    candidates_per_query: int = Field(
        default=8,
        ge=2,
        description="candidates per group: one to a quarter of them positives, the rest negatives, candidates",
    )
    lr: float = Field(default=1e-3, gt=0.0, description="peak learning rate (AdamW), per step")
    warmup_steps: int = Field(default=50, ge=0, description="linear warm-up before the cosine decay to 10%, steps")
    weight_decay: float = Field(
        default=0.01, ge=0.0, description="AdamW weight decay, a fraction of each weight per step"
    )
    grad_clip: float = Field(default=1.0, gt=0.0, description="gradient norm clipped to this before each step, L2 norm")
    listwise_weight: float = Field(
        default=1.0, ge=0.0, description="weight of the listwise softmax cross-entropy per group, a factor"
    )
    bce_weight: float = Field(
        default=0.5, ge=0.0, description="weight of the point-wise binary cross-entropy, a factor"
    )
    hard_start: float = Field(
        default=0.0, ge=0.0, le=1.0, description="share of hard negatives (one attribute off) at step 0, a fraction"
    )
    hard_end: float = Field(
        default=0.75,
        ge=0.0,
        le=1.0,
        description="share of hard negatives reached linearly by 60% of the steps (a curriculum), a fraction",
    )
    seed: int = Field(default=0, description="seed of the groups drawn and of torch, an integer")
    time_limit_s: float | None = Field(
        default=None, gt=0.0, description="stop early after this long, seconds (None: run every step)"
    )
    # Vision-first configurations: the loss through the serving decomposition (prefix up to the band end,
    # shared suffix layers once per distinct suffix) equals the reference definition (tested) and is cheaper.
    fast_path: bool = Field(
        default=True,
        description="compute vision-first losses through the serving decomposition (else the reference forward)",
    )
