"""Redis URLs and expiry, checked without a connection and without redis-py or torch: what
:class:`~.config.StoreConfig` validates and :class:`~.redis.RedisPrefixStore` uses."""

from __future__ import annotations

from urllib.parse import urlsplit

from ..errors import ConfigError

__all__ = ["MAX_TTL_SECONDS", "URL_SCHEMES", "check_url", "redacted"]

URL_SCHEMES = ("redis", "rediss", "unix")

#: The longest ``ttl``, in seconds (about 285,000 years). Redis refuses a SET whose expiry, in milliseconds
#: added to its clock, overflows a signed 64-bit integer ("invalid expire time"); under 2**53 ms the
#: milliseconds are also exact in a float. A store that should not expire takes ``ttl=None``.
MAX_TTL_SECONDS = 2**53 // 1000


def redacted(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages and logs; never raises, even on a URL
    that does not parse (a bad port, an unclosed IPv6 bracket)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = min([i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0], default=len(rest))
    userinfo, at, host = rest[:end].rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}{rest[end:]}"


def check_url(url: str) -> None:
    """Raise :class:`ConfigError` naming what is wrong with a Redis URL (scheme, host, port, database),
    without connecting to it; the message shows the URL without its password."""
    shown = redacted(url)
    try:
        parts = urlsplit(url)
        port = parts.port  # a ValueError for a port that is not a number in 0..65535
    except ValueError as error:
        raise ConfigError(f"Redis URL {shown!r} is not valid: {error}") from None
    if parts.scheme not in URL_SCHEMES:
        raise ConfigError(
            f"Redis URL {shown!r}: unknown URL scheme {parts.scheme!r}; use "
            + ", ".join(f"{s}://" for s in URL_SCHEMES)
        )
    if parts.scheme == "unix":
        if not parts.path:
            raise ConfigError(f"Redis URL {shown!r} names no socket path (unix:///path/to/redis.sock)")
        return
    if not parts.hostname:
        raise ConfigError(f"Redis URL {shown!r} names no host (redis://host:6379/0)")
    if port == 0:
        raise ConfigError(f"Redis URL {shown!r}: port 0 is not a server's port")
    database = parts.path.strip("/")
    if database and not (database.isascii() and database.isdigit()):
        raise ConfigError(f"Redis URL {shown!r}: the database {database!r} must be a number (redis://host:6379/0)")
