"""Loading a reranker: the checkpoint (or the embedded demo model), the configuration it was adapted to, its
pruning embedder, and the prefix store; with a warning when a fast configuration was never validated on it."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from ..demo_model import DEMO_MODEL, demo_checkpoint
from ..errors import ConfigError
from ..store import PrefixStore, StoreConfig, open_store
from .config import PresetName, RerankConfig
from .modeling import ADAPT_FILE, CONFIG_FILE, Backbone, load_backbone

__all__ = ["Loaded", "default_device", "load", "resolve_dtype", "saved_config", "saved_embedder", "unvalidated_parts"]

logger = logging.getLogger(__name__)


@dataclass
class Loaded:
    """What :func:`load` gives :meth:`MiniReranker.from_pretrained`."""

    backbone: Backbone
    config: RerankConfig
    store: PrefixStore
    embedder: Backbone | None
    loaded_as: dict[str, object]


def default_device() -> str:
    """The device a component loads on when none is named: ``cuda`` when present, else ``mps``, else ``cpu``
    (what both framework adapters use, so their defaults agree)."""
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device) -> str | torch.dtype:
    """``dtype``, or for None/``"auto"`` the serving dtype of ``device``: bfloat16 on CUDA (as vLLM and TEI
    serve), float32 elsewhere (CPU bfloat16 kernels are slower than float32 ones)."""
    if dtype is None or dtype == "auto":
        try:
            kind = torch.device(device).type
        except (RuntimeError, TypeError, ValueError):
            return "float32"  # the device itself is refused, by name, when the model loads
        return "bfloat16" if kind == "cuda" else "float32"
    return dtype


def load(
    name_or_path: str | Path,
    *,
    config: RerankConfig | PresetName | None,
    device: str | torch.device | None,
    dtype: str | torch.dtype | None,
    store: StoreConfig | dict[str, Any] | None,
    store_options: dict[str, Any],
    embedder: str | Path | Backbone | None,
    image_fetcher: object,
) -> Loaded:
    """Load the checkpoint, resolve its configuration and embedder, and open the prefix store.

    ``store`` and the flat ``cache_*`` ``store_options`` become one :class:`StoreConfig`, checked here, before
    minutes of model loading, not after."""
    settings = StoreConfig.from_options(store=store, **store_options)
    if config is not None and not isinstance(config, (str, RerankConfig)):
        raise ConfigError(
            f"config must be a RerankConfig or a preset name, got {type(config).__name__}"
            + (" (build one with RerankConfig(**settings))" if isinstance(config, dict) else "")
        )
    if embedder is not None and not isinstance(embedder, (str, os.PathLike, Backbone)):
        raise ConfigError(f"embedder must be a checkpoint path or name, got {type(embedder).__name__} {embedder!r}")
    device = default_device() if device is None else device
    dtype = resolve_dtype(dtype, device)
    loaded_as: dict[str, object] = {"name_or_path": str(name_or_path), "device": str(device), "dtype": str(dtype)}
    store_set = settings.model_dump(exclude_defaults=True, mode="json")
    for option, value in (("embedder", embedder), ("store", store_set or None), ("image_fetcher", image_fetcher)):
        if value is not None:
            loaded_as[option] = value if isinstance(value, (str, int, dict)) else str(value)
    if str(name_or_path) == DEMO_MODEL:
        # The dense weights for the query-first format (the preset or a configuration), else the adapted ones.
        dense = config == "dense" or (isinstance(config, RerankConfig) and config.format == "query_first")
        variant: Literal["dense", "paper"] = "dense" if dense else "paper"
        name_or_path = demo_checkpoint(variant)
        if variant == "paper" and embedder is None:
            embedder = demo_checkpoint("dense")
    saved = saved_config(Path(name_or_path))
    if config is None:
        config = saved or "paper"
    if embedder is None:
        embedder = saved_embedder(Path(name_or_path))
    backbone = load_backbone(name_or_path, device=device, dtype=dtype)
    if backbone.device.type == "cuda":
        # TF32 for float32 matmuls on CUDA (scores stay within float32 tolerance of the dense reference);
        # torch's own default leaves it off. Turn it off again with torch.backends.cuda.matmul.allow_tf32.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    resolved = RerankConfig.for_model(config, backbone.num_layers)
    unvalidated = unvalidated_parts(resolved, saved, backbone.num_layers)
    if unvalidated:
        _warn_unvalidated(str(name_or_path), unvalidated, saved is not None)
    if isinstance(embedder, (str, Path)):
        embedder = load_backbone(embedder, device=device, dtype=dtype)
    if settings.storage is None:
        # Stored prefixes keep the model's own precision by default: a bfloat16 model's entries are bfloat16.
        settings = StoreConfig(**{**settings.model_dump(), "storage": _storage_of(backbone.dtype)})
    # On a GPU the memory tier holds decoded entries on the device: a hot prefix never crosses the bus again.
    tier_device = backbone.device if backbone.device.type == "cuda" else None
    return Loaded(backbone, resolved, open_store(settings, device=tier_device), embedder, loaded_as)


def _storage_of(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bfloat16", torch.float16: "float16"}.get(dtype, "float32")


def unvalidated_parts(config: RerankConfig, saved: RerankConfig | None, depth: int) -> list[str]:
    """The fast parts of ``config`` that ``saved`` (the configuration a checkpoint was adapted to or
    calibrated for; None when it has none) does not vouch for: each technique whose setting differs from
    the saved one. Empty for the dense computation and for the saved configuration itself."""
    config, reference = config.resolve(depth), (saved or RerankConfig(format="query_first")).resolve(depth)
    parts = []
    if config.format == "vision_first" and (reference.format != "vision_first" or config.band != reference.band):
        parts.append(f"vision-first prompt with band {list(config.band or ())}")
    if config.exit_layer != reference.exit_layer and config.exit_layer != depth:
        parts.append(f"exit after layer {config.exit_layer} of {depth}")
    if config.keep_ratio < 1 and (
        config.keep_ratio != reference.keep_ratio
        or config.pruning_guide != reference.pruning_guide
        or config.pruning_guide_layers != reference.pruning_guide_layers
    ):
        parts.append(f"visual-token pruning (keep {config.keep_ratio}, {config.pruning_guide}-guided)")
    return parts


def _warn_unvalidated(name: str, parts: list[str], has_saved: bool) -> None:
    where = (
        f"{CONFIG_FILE} of {name} was saved for another configuration" if has_saved else f"{name} has no {CONFIG_FILE}"
    )
    logger.warning(
        "%s: serving a fast configuration whose quality on this checkpoint was not validated (%s). Without "
        "adaptation such configurations can lose most of the ranking quality (the demo model keeps 0.05 of dense "
        "Hit@1 under the zero-shot paper preset). Adapt it with `minirerank adapt --model %s --data GROUPS --out "
        "DIR`, then choose and save a configuration with `minirerank calibrate --model DIR --data VALIDATION`; "
        "or load with config='dense'.",
        where,
        "; ".join(parts),
        name,
    )


def saved_embedder(folder: Path) -> str | None:
    """The pruning embedder ``minirerank adapt`` trained the folder's configuration with, if it names one."""
    record = folder / ADAPT_FILE
    if not record.is_file():
        return None
    try:
        embedder = json.loads(record.read_text(encoding="utf-8")).get("embedder")
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{record}: not a readable adaptation record ({exc})") from exc
    if not embedder:
        return None
    path = Path(embedder)
    if not path.is_absolute() and not path.exists() and (folder / path).exists():
        return str(folder / path)
    return str(embedder)


def saved_config(folder: Path) -> RerankConfig | None:
    """The configuration a checkpoint folder says it was adapted to, if it says one."""
    saved = folder / CONFIG_FILE
    if not saved.is_file():
        return None
    try:
        return RerankConfig.model_validate_json(saved.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:  # pydantic's ValidationError is a ValueError
        raise ConfigError(f"{saved}: not a valid RerankConfig ({exc})") from exc
