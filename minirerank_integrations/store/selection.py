"""``open_store``: a prefix store chosen by a URL or a directory, with its in-memory tier in front."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from ..errors import ConfigError
from . import codec as _codec
from .disk import DiskPrefixStore
from .entry import PrefixStore
from .memory import MemoryPrefixStore
from .redis import URL_SCHEMES, RedisPrefixStore
from .tiered import TieredPrefixStore

#: Bytes of decoded entries kept in memory in front of a directory or a Redis server, by default.
DEFAULT_MEMORY_LIMIT = 256 * 2**20


def open_store(
    url_or_dir: str | os.PathLike[str] | None = None,
    *,
    storage: _codec.Storage = "float32",
    size_limit: int | None = None,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
    local_dir: str | os.PathLike[str] | None = None,
    namespace: str = "minirerank",
    ttl: float | None = None,
) -> PrefixStore:
    """The prefix store that ``url_or_dir`` names.

    * None: a :class:`MemoryPrefixStore` of ``size_limit`` bytes (1 GiB by default), for this process only.
    * ``redis://``, ``rediss://`` or ``unix://`` URL: a :class:`RedisPrefixStore` (``namespace``, ``ttl``),
      behind a memory tier and, with ``local_dir``, a local :class:`DiskPrefixStore` directory.
    * anything else is a directory: a :class:`DiskPrefixStore` of ``size_limit`` bytes (8 GiB by
      default) behind a memory tier.

    ``memory_limit`` is the memory tier's size in bytes of decoded entries; 0 leaves it out.
    """
    if memory_limit < 0:
        raise ConfigError(f"memory_limit {memory_limit!r} must be a number of bytes >= 0")
    if url_or_dir is None:
        if local_dir is not None:
            raise ConfigError("local_dir is a tier in front of a Redis store; pass a redis:// URL with it")
        return MemoryPrefixStore(**({} if size_limit is None else {"size_limit": size_limit}))
    target = os.fspath(url_or_dir)
    scheme = urlsplit(target).scheme
    tiers: list[PrefixStore] = []
    if memory_limit:
        tiers.append(MemoryPrefixStore(size_limit=memory_limit))
    if scheme in URL_SCHEMES:
        if size_limit is not None:
            raise ConfigError(
                "size_limit does not apply to a Redis store: set the server's maxmemory (with "
                "maxmemory-policy allkeys-lru) instead"
            )
        if local_dir is not None:
            tiers.append(DiskPrefixStore(os.path.expanduser(os.fspath(local_dir)), storage=storage))
        back: PrefixStore = RedisPrefixStore(target, namespace=namespace, storage=storage, ttl=ttl)
    elif "://" in target:
        raise ConfigError(
            f"prefix store {target!r}: unknown URL scheme {scheme!r}; use a directory or one of "
            + ", ".join(f"{s}://" for s in URL_SCHEMES)
        )
    else:
        if local_dir is not None or ttl is not None:
            raise ConfigError("local_dir and ttl apply to a Redis store, not to a cache directory")
        kwargs = {} if size_limit is None else {"size_limit": size_limit}
        back = DiskPrefixStore(os.path.expanduser(target), storage=storage, **kwargs)
    return TieredPrefixStore([*tiers, back]) if tiers else back
