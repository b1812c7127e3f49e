"""``StoreConfig``: where prefixes are kept and how, as one validated model that every entry point passes on.

``open_store`` opens it; the engine's loading, both adapters, the CLI and the Ray pipeline take it (or a
dict of it) instead of declaring the store's settings again. Every field names its unit. A wrong value or
type is a :class:`~minirerank_integrations.errors.ConfigError` naming the field, raised when the settings
are built: before a model is loaded, never in the middle of a call.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import ConfigError
from .precision import Storage
from .urls import MAX_TTL_SECONDS, URL_SCHEMES, check_url, redacted

__all__ = ["DEFAULT_MEMORY_LIMIT", "MAX_TTL_SECONDS", "StoreConfig"]

#: Bytes of decoded entries kept in memory in front of a directory or a Redis server, by default.
DEFAULT_MEMORY_LIMIT = 256 * 2**20

#: ``MiniReranker.from_pretrained``'s flat keyword for each field.
_FLAT = {
    "dir": "cache_dir",
    "url": "cache_url",
    "namespace": "cache_namespace",
    "storage": "cache_storage",
    "size_limit": "cache_size_limit",
    "ttl": "cache_ttl",
    "memory_limit": "cache_memory_limit",
    "local_dir": "cache_local_dir",
    "write_behind": "cache_write_behind",
}


class StoreConfig(BaseModel):
    """The prefix store's settings: which store (memory, a directory or a Redis server) and its limits.

    * neither ``dir`` nor ``url``: prefixes live in this process's memory (``size_limit`` bytes, 1 GiB by
      default);
    * ``dir``: a persistent directory (``size_limit`` bytes, 8 GiB by default) shared by the processes of a
      host, behind ``memory_limit`` bytes in memory;
    * ``url``: a Redis or Valkey server shared by hosts (keys under ``namespace``, entries expiring after
      ``ttl`` seconds), behind ``memory_limit`` bytes in memory and, with ``local_dir``, a local directory;
    * ``write_behind``: the directory and Redis writes go to a writer thread.

    Build it with keywords, from a dict or JSON (``StoreConfig.model_validate``), or from the flat
    ``cache_*`` keywords of ``from_pretrained`` (:meth:`from_options`). It is frozen; ``model_copy(update=...)``
    is not validated, so build a new one to change a setting.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(_validation_message(exc, _SPELLED.get())) from None

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> StoreConfig:
        if isinstance(obj, StoreConfig):
            return obj
        if not isinstance(obj, dict):
            raise ConfigError(f"store settings must be a StoreConfig or a dict, got {type(obj).__name__}")
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as exc:
            raise _unwrapped(exc) from None

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **kwargs: Any) -> StoreConfig:
        try:
            return super().model_validate_json(json_data, **kwargs)
        except ValidationError as exc:
            raise _unwrapped(exc) from None

    dir: str | None = Field(
        None,
        description="Path of a persistent prefix store directory (created when missing; str or os.PathLike). "
        "None: no directory. Not with url.",
    )
    url: str | None = Field(
        None,
        description="URL of a Redis or Valkey server shared by hosts: redis://[[user]:password@]host:port/db, "
        "rediss:// for TLS, unix:///path.sock; without a password in it, $MINIRERANK_REDIS_PASSWORD is used. "
        "Not with dir.",
    )
    namespace: str = Field(
        "minirerank",
        min_length=1,
        strict=True,
        description="Redis only: prefix (a word, no whitespace) of every key, so several deployments share a "
        "server without meeting each other's entries.",
    )
    storage: Storage | None = Field(
        None,
        description="Precision of the keys and values a directory or Redis stores: float32 (lossless), float16 "
        "or bfloat16 (half the bytes), int8 (a quarter); the error bounds are in the store's codec. None: the "
        "model's weights dtype when an engine opens the store (float32 for open_store alone). The memory store "
        "keeps entries as computed.",
    )
    size_limit: int | None = Field(
        None,
        gt=0,
        strict=True,
        description="Bytes the memory store or the directory may hold (None: 1 GiB in memory, 8 GiB in a "
        "directory). A Redis server is bounded by its own maxmemory instead.",
    )
    ttl: float | None = Field(
        None,
        gt=0,
        le=MAX_TTL_SECONDS,
        strict=True,
        allow_inf_nan=False,
        description=f"Redis only: seconds an entry lives after it is written, > 0 and at most {MAX_TTL_SECONDS} "
        "(Redis's expiry range). None: until the server evicts it.",
    )
    memory_limit: int = Field(
        DEFAULT_MEMORY_LIMIT,
        ge=0,
        strict=True,
        description="Bytes of decoded entries kept in this process's memory in front of a directory or Redis "
        "(hot prefixes are then neither read nor decoded again); 0: no memory tier.",
    )
    local_dir: str | None = Field(
        None,
        description="Redis only: path of a local directory in front of the server (a second tier, per host).",
    )

    write_behind: bool = Field(
        False,
        strict=True,
        description="Write a directory's or Redis's entries on a writer thread (on/off), so that ingestion and "
        "cold queries do not wait for the disk or the server; entries still queued are served from the queue, "
        "precache and closing the store wait for the writes, and a failed write is a warning (the entry is "
        "recomputed later). The queue holds at most 512 MiB of entries before a put waits for room.",
    )

    @field_validator("dir", "local_dir", mode="before")
    @classmethod
    def _path(cls, value: object) -> object:
        if value is None:
            return None
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str):
            raise ValueError(f"must be a directory path (str or os.PathLike), got {type(value).__name__} {value!r}")
        if not value.strip():
            raise ValueError("is an empty string (it would be the current directory); pass a directory")
        if value.split("://", 1)[0] in URL_SCHEMES and "://" in value:
            raise ValueError(f"{value!r} is a server URL, not a directory; pass it as url")
        return value

    @field_validator("url", mode="before")
    @classmethod
    def _url(cls, value: object) -> object:
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError(f"must be a redis://, rediss:// or unix:// URL string, got {type(value).__name__}")
        check_url(value)  # ConfigError: its message is kept as is
        return value

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if any(c.isspace() or not c.isprintable() for c in value):
            raise ValueError(f"{value!r} must be a word without whitespace or control characters")
        return value

    @model_validator(mode="after")
    def _combination(self) -> StoreConfig:
        spelled = _SPELLED.get() or {}
        dir_, url, local_dir, ttl, size_limit = (
            spelled.get(name, name) for name in ("dir", "url", "local_dir", "ttl", "size_limit")
        )
        if self.dir is not None and self.url is not None:
            raise ValueError(
                f"{dir_} and {url} are exclusive: a store is a directory or a Redis server; use {local_dir} for a "
                "local directory in front of Redis"
            )
        if self.url is None:
            if self.local_dir is not None:
                raise ValueError(f"{local_dir} is a tier in front of a Redis store; set {url} with it")
            if self.ttl is not None:
                raise ValueError(f"{ttl} applies to a Redis store ({url}), not to a directory or to memory")
        elif self.size_limit is not None:
            raise ValueError(
                f"{size_limit} does not apply to a Redis store: set the server's maxmemory (with "
                "maxmemory-policy allkeys-lru) instead"
            )
        return self

    # -- views -----------------------------------------------------------------------------------

    @property
    def kind(self) -> Literal["memory", "directory", "redis"]:
        """Which backend holds the entries: this process's memory, a directory or a Redis server."""
        return "redis" if self.url is not None else "directory" if self.dir is not None else "memory"

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, redacted(value) if name == "url" and isinstance(value, str) else value

    # -- the flat keywords -------------------------------------------------------------------------

    @classmethod
    def from_options(cls, **options: Any) -> StoreConfig:
        """Settings from ``from_pretrained``'s flat keywords (``cache_dir``, ``cache_url``, ``cache_namespace``,
        ``cache_storage``, ``cache_size_limit``, ``cache_ttl``, ``cache_memory_limit``, ``cache_local_dir``,
        ``cache_write_behind``) or
        from the field names themselves. None leaves a setting at its default. A ``store`` option (a
        StoreConfig or a dict) is the base the other options change.

        Raises:
            ConfigError: an unknown option, a wrong type or value, or settings that do not go together;
                the message names the option as it was passed (``cache_ttl: ...``).
        """
        spelled = {flat: field for field, flat in _FLAT.items()} | {field: field for field in _FLAT}
        base = options.pop("store", None)
        unknown = sorted(set(options) - set(spelled))
        if unknown:
            raise ConfigError(
                f"unknown store option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; use "
                + ", ".join(_FLAT.values())
            )
        given = {spelled[name]: value for name, value in options.items() if value is not None}
        data: dict[str, Any] = {}
        if base is not None:
            data = cls.model_validate(base).model_dump(exclude_defaults=True)
        flat = any(name in spelled and name not in _FLAT for name in options)  # the caller's style
        token = _SPELLED.set((dict(_FLAT) if flat else {}) | {spelled[name]: name for name in options})
        try:
            return cls(**(data | given))
        finally:
            _SPELLED.reset(token)


#: While :meth:`StoreConfig.from_options` builds one: each field's name as the caller spelled it.
_SPELLED: ContextVar[dict[str, str] | None] = ContextVar("_SPELLED", default=None)


def _unwrapped(exc: ValidationError) -> ConfigError:
    """The ConfigError ``__init__`` raised inside pydantic's validation (it re-enters a custom ``__init__``),
    or one phrasing ``exc``."""
    errors = exc.errors()
    if len(errors) == 1 and isinstance((errors[0].get("ctx") or {}).get("error"), ConfigError):
        return errors[0]["ctx"]["error"]
    return ConfigError(_validation_message(exc))


def _validation_message(exc: ValidationError, names: dict[str, str] | None = None) -> str:
    """pydantic's errors as one line naming each bad setting (by the name it was passed as)."""
    parts = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        if loc and names:
            loc[0] = names.get(loc[0], loc[0])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] in ("int_type", "float_type", "string_type", "literal_error", "int_from_float"):
            message += f", got {type(error['input']).__name__} {_shown(error['input'])}"
        parts.append(f"{'.'.join(loc)}: {message}" if loc else message)
    return "invalid store settings: " + "; ".join(parts)


def _shown(value: object) -> str:
    text = redacted(value) if isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
