"""Loading the engine, or sharing one that is already loaded, for the postprocessor and the ingestion step."""

from __future__ import annotations

import os
from typing import Any

import torch
from minirerank_integrations import DEMO_MODEL, MiniReranker, PresetName, RerankConfig, StoreConfig, default_device

#: The checkpoint loaded when no model is named.
DEFAULT_MODEL = DEMO_MODEL  # the embedded demo; pass a real checkpoint such as "Qwen/Qwen3-VL-Reranker-2B"

ModelLike = str | os.PathLike | MiniReranker
StoreLike = StoreConfig | dict[str, Any]

#: The ``store`` field's description, one text for both components.
STORE_DESCRIPTION = (
    "The engine's prefix store: a StoreConfig or a dict of one (a directory or a Redis URL, the precision such as "
    "int8, size and memory limits in bytes, ttl in seconds); None: in memory. cache_dir and cache_url are "
    "shorthands for its dir and url. Loading only."
)


def store_settings(
    store: StoreLike | None, cache_dir: str | os.PathLike | None, cache_url: str | None
) -> StoreConfig | None:
    """One :class:`StoreConfig` of ``store`` with the ``cache_dir`` and ``cache_url`` shorthands applied, or None
    when none was given; ``ConfigError`` naming a bad setting."""
    if store is None and cache_dir is None and cache_url is None:
        return None
    return StoreConfig.from_options(store=store, cache_dir=cache_dir, cache_url=cache_url)


def resolve_engine(
    model: ModelLike,
    *,
    config: RerankConfig | PresetName | None,
    batch_size: int | None,
    device: str | None,
    dtype: str | None,
    cache_dir: str | os.PathLike | None = None,
    cache_url: str | None = None,
    store: StoreLike | None = None,
) -> tuple[MiniReranker, dict[str, Any]]:
    """Load ``model`` by name, or share it if it is already a ``MiniReranker``.

    Returns the engine and the values the component records in its fields (what ``to_dict`` writes), so
    that ``from_dict`` loads the same model with the same settings.

    The loading options (``device``, ``dtype``, the store: ``store``, ``cache_dir``, ``cache_url``) belong to
    whoever loads the model, and the configuration to the engine: a shared engine is never reconfigured behind
    the back of the other components that use it, so a conflicting value raises ``ValueError`` instead. Store
    settings are checked (``ConfigError``) before the model loads.
    """
    if isinstance(model, MiniReranker):
        return model, _shared_fields(model, config, batch_size, device, dtype, cache_dir, cache_url, store)
    settings = store_settings(store, cache_dir, cache_url)
    name = os.fspath(model)
    device = device or default_device()
    kwargs: dict[str, Any] = {"config": config, "device": device}  # None: the checkpoint's own, else "paper"
    if dtype is not None:
        kwargs["dtype"] = dtype
    if settings is not None:
        kwargs["store"] = settings
    engine = MiniReranker.from_pretrained(name, **kwargs)
    if batch_size is not None and batch_size != engine.config.batch_size:
        engine.config = _with_batch_size(engine.config, batch_size)
    fields = {
        "model": name,
        "config": config,
        "batch_size": batch_size,
        "device": device,
        "dtype": _dtype_name(engine),
        "cache_dir": None if settings is None else settings.dir,
        "cache_url": None if settings is None else settings.url,
        "store": settings,
    }
    return engine, fields


def model_name(engine: MiniReranker) -> str:
    """The name the engine was loaded by (``"minirerank-demo"`` for the demo), else its checkpoint's path."""
    loaded = engine.loaded_as
    return str(loaded["name_or_path"]) if loaded else engine.backbone.name


#: ``from_pretrained`` options the component's fields carry; an engine loaded with any other cannot be rebuilt.
_REBUILT_OPTIONS = {"name_or_path", "device", "dtype"}


def rebuild_problem(engine: MiniReranker) -> str | None:
    """Why a shared engine cannot be loaded again from the component's fields, or None if it can."""
    loaded = engine.loaded_as
    if loaded is None:
        return "it was not loaded by MiniReranker.from_pretrained"
    extra = [_spelled(option, loaded[option]) for option in sorted(set(loaded) - _REBUILT_OPTIONS)]
    if extra:
        return f"it was loaded with {', '.join(extra)}, which the component's fields do not carry"
    return None


def _spelled(option: str, value: object) -> str:
    """``option`` as a user passed it: store settings by their ``from_pretrained`` keywords too."""
    if option == "store" and isinstance(value, dict) and value:
        return f"store ({', '.join('cache_' + name for name in value)})"
    return option


def refuse_unrebuildable(component: str, problem: str | None) -> None:
    """Raise instead of serializing a component whose dict would load another engine."""
    if problem is not None:
        raise ValueError(
            f"{component} shares an engine that cannot be rebuilt from its settings ({problem}); its dict would "
            "load a different model. Serialize a component that loads its model by name, or rebuild the engine "
            "in code"
        )


def _shared_fields(
    engine: MiniReranker,
    config: RerankConfig | PresetName | None,
    batch_size: int | None,
    device: str | None,
    dtype: str | None,
    cache_dir: str | os.PathLike | None,
    cache_url: str | None,
    store: StoreLike | None,
) -> dict[str, Any]:
    current = engine.config
    if config is not None or batch_size is not None:
        wanted = current
        if config is not None:
            depth = engine.num_layers
            wanted = RerankConfig.preset(config, depth) if isinstance(config, str) else config.resolve(depth)
        if batch_size is not None:
            wanted = _with_batch_size(wanted, batch_size)
        if wanted != current:
            raise ValueError(
                f"config={config!r}, batch_size={batch_size!r} differ from the shared engine's configuration "
                f"({current!r}); set it on the engine (engine.config = ...) so every component that shares "
                "the engine scores the same way, or leave config and batch_size unset"
            )
    loaded_on = engine.backbone.device
    if device is not None and not _same_device(torch.device(device), loaded_on):
        raise ValueError(
            f"device={device!r}, but the shared engine is already loaded on {loaded_on}; device applies only when "
            "the model is loaded by name"
        )
    if dtype is not None and dtype != _dtype_name(engine):
        raise ValueError(
            f"dtype={dtype!r}, but the shared engine is already loaded as {_dtype_name(engine)}; dtype applies "
            "only when the model is loaded by name"
        )
    if cache_dir is not None:
        raise ValueError(
            f"cache_dir={os.fspath(cache_dir)!r} applies only when the model is loaded by name; pass it to "
            "MiniReranker.from_pretrained(..., cache_dir=...) when you load the engine you share"
        )
    if cache_url is not None:
        raise ValueError(
            "cache_url applies only when the model is loaded by name; pass it to "
            "MiniReranker.from_pretrained(..., cache_url=...) when you load the engine you share"
        )
    if store is not None:
        raise ValueError(
            "store applies only when the model is loaded by name; pass its settings to "
            "MiniReranker.from_pretrained when you load the engine you share"
        )
    return {
        "model": model_name(engine),
        "config": current,
        "batch_size": batch_size,
        "device": str(loaded_on),
        "dtype": _dtype_name(engine),
        "cache_dir": None,
        "cache_url": None,
        "store": None,
    }


def _with_batch_size(config: RerankConfig, batch_size: int) -> RerankConfig:
    # Rebuilt rather than model_copy'd, so the new value is validated.
    return RerankConfig(**{**config.model_dump(), "batch_size": batch_size})


def _same_device(wanted: torch.device, actual: torch.device) -> bool:
    return wanted.type == actual.type and (wanted.index is None or wanted.index == actual.index)


def _dtype_name(engine: MiniReranker) -> str:
    return str(engine.backbone.dtype).removeprefix("torch.")
