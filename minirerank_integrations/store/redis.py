"""The shared prefix store: codec bytes in Redis (>= 7) or Valkey, read by every replica of a reranker.

One Redis serves many processes and hosts: each prefix is one string value (the :mod:`.codec` blob)
under ``{namespace}:prefix:{key}.{storage}``, so several models or deployments share a server without
seeing each other's entries. A name splits one way only: the key part never holds a ``:`` (the engine's
keys are hex digests; any other key has ``%`` and ``:`` percent-encoded), so whatever a namespace holds
(``:prefix:``, glob characters), the namespace is everything before the last ``:prefix:``. ``len`` and
``clear`` SCAN with the namespace escaped for Redis's glob and keep only names whose key part has no
``:``: namespace ``a`` never counts nor deletes ``a:prefix:b:prefix:...``, the entries of namespace
``a:prefix:b``. Eviction is left to the server: run it with ``maxmemory`` and ``maxmemory-policy
allkeys-lru`` so the least recently read prefixes go first (a missing entry is only a recomputation).
Entries may also expire after ``ttl`` seconds.

The store never fails a rerank call. A bad value (damaged, truncated, written under another key, a
pickle or any other foreign bytes) is refused by the codec, deleted, counted in ``stats.rejected`` and
served as a miss; nothing read from the server is unpickled. When the server cannot be reached, at
start or mid-run, the store gives one ``RuntimeWarning`` per outage, serves misses and drops writes,
and tries the server again after a backoff that doubles from ``retry_min_s`` to ``retry_max_s``.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import warnings
from collections.abc import Sequence
from typing import Any, get_args
from urllib.parse import urlsplit

from ..errors import CacheError, ConfigError
from . import codec as _codec
from .entry import PrefixEntry, PrefixStore, StoreStats
from .urls import MAX_TTL_SECONDS, URL_SCHEMES, check_url, redacted

__all__ = ["MAX_TTL_SECONDS", "PASSWORD_ENV", "URL_SCHEMES", "RedisPrefixStore", "check_url", "redacted"]

logger = logging.getLogger(__name__)

#: Read when the URL carries no password, so that it need not appear in a command line or a config file.
PASSWORD_ENV = "MINIRERANK_REDIS_PASSWORD"


def _redis_module() -> Any:
    try:
        import redis
        import redis.backoff
        import redis.retry
    except ImportError as error:  # an optional extra
        raise ConfigError(
            "a redis:// prefix store needs redis-py: pip install 'minirerank-integrations[redis]'"
        ) from error
    return redis


class RedisPrefixStore(PrefixStore):
    """Prefix entries as codec bytes in Redis or Valkey, shared by processes and hosts.

    Args:
        url: ``redis://[[user]:password@]host:port/db``, ``rediss://`` for TLS, or ``unix:///path.sock``.
            Without a password in the URL, ``$MINIRERANK_REDIS_PASSWORD`` is used when set.
        namespace: prefix of every key this store writes; stores with other namespaces never meet.
        storage: precision of the stored keys/values (see :mod:`.codec`).
        ttl: seconds an entry lives after it is written; None keeps it until Redis evicts it.
        socket_timeout: seconds to wait for the server on connect and on each reply.
        retry_min_s, retry_max_s: after a failure the server is left alone this long, doubling up to the
            maximum, then tried again by the next call.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "minirerank",
        storage: _codec.Storage = "float32",
        ttl: float | None = None,
        socket_timeout: float = 2.0,
        retry_min_s: float = 0.5,
        retry_max_s: float = 30.0,
    ) -> None:
        if storage not in get_args(_codec.Storage):
            raise ConfigError(f"storage {storage!r} is unknown; use one of {', '.join(get_args(_codec.Storage))}")
        if ttl is not None and (
            isinstance(ttl, bool)
            or not isinstance(ttl, (int, float))
            or not math.isfinite(ttl)
            or not 0 < ttl <= MAX_TTL_SECONDS
        ):
            raise ConfigError(
                f"ttl {ttl!r} must be a finite number of seconds > 0 and <= {MAX_TTL_SECONDS} (Redis's expiry "
                "range), or None for no expiry"
            )
        if (
            not isinstance(namespace, str)
            or not namespace
            or any(c.isspace() or not c.isprintable() for c in namespace)
        ):
            raise ConfigError(f"namespace {namespace!r} must be a non-empty word without whitespace")
        if not 0 < retry_min_s <= retry_max_s:
            raise ConfigError(f"retry_min_s {retry_min_s!r} must be > 0 and <= retry_max_s {retry_max_s!r}")
        if not isinstance(url, str):
            raise ConfigError(f"Redis URL must be a string, got {type(url).__name__}")
        check_url(url)
        redis = _redis_module()
        self.url = url
        self.namespace = namespace
        self.storage = storage
        self.ttl = ttl
        # Computed once: a put never does arithmetic that could fail (ttl is checked finite above).
        self._ttl_ms = None if ttl is None else max(1, round(ttl * 1000))
        self._errors = (redis.exceptions.RedisError, OSError)
        self._prefix = f"{namespace}:prefix:"
        options: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_timeout,
            # No retries inside redis-py: a down server is handled here, with a backoff, without blocking calls.
            "retry": redis.retry.Retry(redis.backoff.NoBackoff(), 0),
        }
        if urlsplit(url).password is None and os.environ.get(PASSWORD_ENV):
            options["password"] = os.environ[PASSWORD_ENV]
        try:
            self._client = redis.Redis.from_url(url, **options)
        except ValueError as error:
            raise ConfigError(f"Redis URL {redacted(url)!r} is not valid: {error}") from error
        self._stats = StoreStats()
        self._lock = threading.Lock()
        self._retry_min_s, self._retry_max_s = retry_min_s, retry_max_s
        self._backoff_s = retry_min_s
        self._down_until: float | None = None  # monotonic time before which the server is not tried
        self._outage_warned = False
        self._unstorable_warned = False

    # -- PrefixStore ---------------------------------------------------------------------------------

    @property
    def stats(self) -> StoreStats:  # type: ignore[override]
        """This instance's counters (``bytes`` stays 0: the server's memory is shared, see :meth:`used_memory`)."""
        return self._stats

    @property
    def available(self) -> bool:
        """False while the server is considered down (a backoff is running)."""
        return self._down_until is None

    def get(self, key: str) -> PrefixEntry | None:
        return self.get_many([key])[0]

    def get_many(self, keys: Sequence[str]) -> list[PrefixEntry | None]:
        """Every key's entry in one pipelined round trip; misses (and refused values) are None."""
        keys = list(keys)
        for key in keys:
            _check_key(key)
        if not keys:
            return []
        blobs = self._call(lambda: self._fetch(keys), what="reading prefixes")
        if blobs is None:  # server down: all misses
            with self._lock:
                self._stats.misses += len(keys)
            return [None] * len(keys)
        found: list[PrefixEntry | None] = []
        for key, blob in zip(keys, blobs):
            found.append(None if blob is None else self._decode(key, blob))
        with self._lock:
            hits = sum(entry is not None for entry in found)
            self._stats.hits += hits
            self._stats.misses += len(keys) - hits
        return found

    def put(self, key: str, entry: PrefixEntry) -> None:
        _check_key(key)
        try:
            data = _codec.encode_entry(entry, key=key, storage=self.storage)
        except _codec.UnstorableEntry as error:  # values the storage precision cannot hold: served, not stored
            with self._lock:
                self._stats.unstorable += 1
                first, self._unstorable_warned = not self._unstorable_warned, True
            if first:
                warnings.warn(
                    f"prefix store {redacted(self.url)}: an entry cannot be stored as {self.storage} ({error}); "
                    "such entries are computed per call instead. Further ones are not warned about.",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return
        stored = self._call(lambda: self._client.set(self._name(key), data, px=self._ttl_ms), what="writing a prefix")
        with self._lock:
            if stored:
                self._stats.writes += 1
                self._stats.bytes_written += len(data)
            else:
                self._stats.write_failures += 1

    def __contains__(self, key: object) -> bool:
        """Whether the server holds a value for ``key`` (unchecked); False while it is down."""
        if type(key) is not str:
            return False
        return bool(self._call(lambda: self._client.exists(self._name(key)), what="looking up a prefix"))

    def __len__(self) -> int:
        """Entries in this namespace (a SCAN over the server's keys: for maintenance, not per query); 0 while
        the server is down."""
        count = self._call(lambda: sum(1 for _ in self._names()), what="counting prefixes")
        return count or 0

    def clear(self) -> int:
        """Delete every entry of this namespace, and only those; returns how many were deleted (0 while the
        server is down)."""

        def unlink_all() -> int:
            removed = 0
            batch: list[bytes] = []
            for name in self._names():
                batch.append(name)
                if len(batch) == 500:
                    removed += int(self._client.unlink(*batch))
                    batch = []
            if batch:
                removed += int(self._client.unlink(*batch))
            return removed

        return self._call(unlink_all, what="clearing prefixes") or 0

    def used_memory(self) -> int | None:
        """Bytes the whole server uses (``INFO memory``), or None while it is down."""
        info = self._call(lambda: self._client.info("memory"), what="reading server memory")
        return None if info is None else int(info["used_memory"])

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RedisPrefixStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RedisPrefixStore({redacted(self.url)!r}, namespace={self.namespace!r}, storage={self.storage!r})"

    # -- internals -----------------------------------------------------------------------------------

    def _fetch(self, keys: list[str]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.get(self._name(key))
        # A reply error for one key (WRONGTYPE: someone stored a list there) comes back in its place, and
        # that key alone is dropped; a connection error still raises.
        return pipe.execute(raise_on_error=False)

    def _decode(self, key: str, blob: Any) -> PrefixEntry | None:
        try:
            if isinstance(blob, Exception):
                raise CacheError(f"Redis refused to read it: {blob}")
            if not isinstance(blob, bytes):
                raise CacheError(f"Redis returned a {type(blob).__name__}, not bytes")
            return _codec.decode_entry(blob, key=key, storage=self.storage)
        except CacheError as error:
            with self._lock:
                self._stats.rejected += 1
            logger.warning("prefix store %s: dropping unreadable entry %s: %s", redacted(self.url), key, error)
            self._call(lambda: self._client.delete(self._name(key)), what="deleting a bad prefix")
            return None

    def _name(self, key: str) -> str:
        """The server's name for ``key`` in this store's precision (:func:`.codec.row_key`, so stores of
        different precisions share a namespace side by side): its key part never holds a ``:``."""
        return self._prefix + _codec.row_key(key, self.storage).replace("%", "%25").replace(":", "%3A")

    def _names(self) -> Any:
        """Every name of this namespace, streamed from SCAN. The pattern is the namespace escaped for Redis's
        glob; a name it matches whose key part holds a ``:`` belongs to a longer namespace and is skipped."""
        start = len(self._prefix.encode())
        for name in self._client.scan_iter(match=_glob_escape(self._prefix) + "*", count=500):
            if b":" not in name[start:]:
                yield name

    def _call(self, operation: Any, *, what: str) -> Any:
        """Run ``operation`` against the server; None (and a backoff) when the server fails."""
        with self._lock:
            down_until = self._down_until
        if down_until is not None and time.monotonic() < down_until:
            return None
        try:
            result = operation()
        except self._errors as error:
            self._failed(error, what)
            return None
        if down_until is not None:
            with self._lock:
                self._down_until, self._backoff_s, self._outage_warned = None, self._retry_min_s, False
            logger.warning("prefix store %s is reachable again", redacted(self.url))
        return result

    def _failed(self, error: BaseException, what: str) -> None:
        redis = _redis_module()
        if isinstance(error, (redis.exceptions.ResponseError, redis.exceptions.DataError)) and not isinstance(
            error, redis.exceptions.AuthenticationError
        ):
            # The server answered (full without an eviction policy, read-only replica...), or the client refused
            # a value before sending it: not an outage, so no backoff; the call goes on without this entry.
            logger.warning("prefix store %s refused %s: %s", redacted(self.url), what, error)
            return
        with self._lock:
            self._down_until = time.monotonic() + self._backoff_s
            backoff, self._backoff_s = self._backoff_s, min(self._backoff_s * 2, self._retry_max_s)
            first, self._outage_warned = not self._outage_warned, True
        if first:
            warnings.warn(
                f"prefix store {redacted(self.url)} cannot be reached ({what}: {error}); reranking goes on "
                f"without the shared store, which is tried again after {backoff:g} s (backing off up to "
                f"{self._retry_max_s:g} s). Further failures of this outage are not warned about.",
                RuntimeWarning,
                stacklevel=4,
            )
        else:
            logger.debug("prefix store %s: %s failed: %s", redacted(self.url), what, error)


def _glob_escape(text: str) -> str:
    """``text`` matched literally by Redis's glob (SCAN MATCH): every special character backslash-escaped."""
    return "".join("\\" + c if c in "\\*?[]" else c for c in text)


def _check_key(key: object) -> None:
    if type(key) is not str:
        raise TypeError(f"prefix store keys are str digests, got {type(key).__name__}")
