"""``open_store``: the prefix store a :class:`~.config.StoreConfig` describes, with its in-memory tier in front."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

import torch

from ..errors import ConfigError
from . import codec as _codec
from .config import DEFAULT_MEMORY_LIMIT, StoreConfig
from .disk import DiskPrefixStore
from .entry import PrefixStore
from .memory import MemoryPrefixStore
from .redis import RedisPrefixStore
from .tiered import TieredPrefixStore
from .urls import URL_SCHEMES
from .writer import WriteBehindStore

__all__ = ["DEFAULT_MEMORY_LIMIT", "open_store"]


def open_store(
    target: StoreConfig | dict[str, Any] | str | os.PathLike[str] | None = None,
    *,
    storage: _codec.Storage | None = None,
    size_limit: int | None = None,
    memory_limit: int | None = None,
    local_dir: str | os.PathLike[str] | None = None,
    namespace: str | None = None,
    ttl: float | None = None,
    write_behind: bool = False,
    device: str | torch.device | None = None,
) -> PrefixStore:
    """The prefix store that ``target`` names.

    ``target`` is a :class:`StoreConfig` (or a dict of one), or, in the keyword form, a URL or a directory
    with the other settings as keywords (None leaves a setting at the StoreConfig default; a store opened here
    without a ``storage`` stores float32):

    * None: a :class:`MemoryPrefixStore` of ``size_limit`` bytes (1 GiB by default), for this process only.
    * ``redis://``, ``rediss://`` or ``unix://`` URL: a :class:`RedisPrefixStore` (``namespace``, ``ttl``),
      behind a memory tier and, with ``local_dir``, a local :class:`DiskPrefixStore` directory.
    * anything else is a directory: a :class:`DiskPrefixStore` of ``size_limit`` bytes (8 GiB by
      default) behind a memory tier.

    ``memory_limit`` is the memory tier's size in bytes of decoded entries; 0 leaves it out.

    With either form, ``write_behind=True`` (or the StoreConfig's ``write_behind``) writes the directory and
    Redis tiers on a writer thread (:class:`~.writer.WriteBehindStore`), and ``device`` (``"cuda"``) keeps the memory tier's entries there
    and has a directory serve its entries there (:class:`MemoryPrefixStore`, :class:`DiskPrefixStore`).

    Raises:
        ConfigError: invalid settings (see :class:`StoreConfig`), or keywords beside a StoreConfig.
    """
    options = {
        "storage": storage,
        "size_limit": size_limit,
        "memory_limit": memory_limit,
        "local_dir": local_dir,
        "namespace": namespace,
        "ttl": ttl,
    }
    if isinstance(target, (StoreConfig, dict)):
        given = sorted(name for name, value in options.items() if value is not None)
        if given:
            raise ConfigError(f"pass {', '.join(given)} inside the StoreConfig, not beside it")
        config = StoreConfig.model_validate(target)
    else:
        config = StoreConfig.from_options(**_where(target), **options)
    if not isinstance(write_behind, bool):
        raise ConfigError(f"write_behind must be True or False, got {write_behind!r}")
    return _opened(config, write_behind=write_behind or config.write_behind, device=device)


def _where(target: str | os.PathLike[str] | None) -> dict[str, str | None]:
    """``{"url": ...}`` or ``{"dir": ...}`` for the keyword form's first argument."""
    if target is None:
        return {}
    if not isinstance(target, (str, os.PathLike)):
        raise ConfigError(
            f"open_store takes a StoreConfig, a URL or a directory path, got {type(target).__name__} {target!r}"
        )
    text = os.fspath(target)
    if not isinstance(text, str):
        raise ConfigError(f"open_store takes a text path, got bytes {text!r}")
    scheme = urlsplit(text).scheme if "://" in text else ""
    if scheme in URL_SCHEMES:
        return {"url": text}
    if "://" in text:
        raise ConfigError(
            f"prefix store {text!r}: unknown URL scheme {scheme!r}; use a directory or one of "
            + ", ".join(f"{s}://" for s in URL_SCHEMES)
        )
    return {"dir": text}


def _opened(
    config: StoreConfig, *, write_behind: bool = False, device: str | torch.device | None = None
) -> PrefixStore:
    if config.kind == "memory":
        size = {} if config.size_limit is None else {"size_limit": config.size_limit}
        return MemoryPrefixStore(**size, device=device)

    def slow(store: PrefixStore) -> PrefixStore:
        return WriteBehindStore(store) if write_behind else store

    storage = config.storage or "float32"
    tiers: list[PrefixStore] = []
    if config.memory_limit:
        tiers.append(MemoryPrefixStore(size_limit=config.memory_limit, device=device))
    back: PrefixStore
    if config.url is not None:
        if config.local_dir is not None:
            tiers.append(slow(DiskPrefixStore(os.path.expanduser(config.local_dir), storage=storage, device=device)))
        back = slow(RedisPrefixStore(config.url, namespace=config.namespace, storage=storage, ttl=config.ttl))
    else:
        assert config.dir is not None  # kind == "directory"
        kwargs: dict[str, Any] = {} if config.size_limit is None else {"size_limit": config.size_limit}
        back = slow(DiskPrefixStore(os.path.expanduser(config.dir), storage=storage, device=device, **kwargs))
    return TieredPrefixStore([*tiers, back]) if tiers else back
