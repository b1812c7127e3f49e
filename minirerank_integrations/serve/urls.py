"""Image URLs without SSRF: a host allowlist checked before anything is fetched, addresses checked after the
name is resolved (loopback, link-local, private and other non-global ranges are refused unless explicitly
allowed), the connection pinned to the address that was checked (no DNS rebinding between check and fetch),
redirects re-checked hop by hop, and a byte and time budget per download (httpx)."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from ..errors import ImageLoadError

#: Redirects one image download may follow; each hop is checked like the first URL.
MAX_REDIRECTS = 3


class URLRefused(ImageLoadError):
    """An image URL this service will not fetch; the message says why and which setting allows it."""


@dataclass(frozen=True)
class URLPolicy:
    """Which image URLs may be fetched, and how much each download may cost."""

    allowed_hosts: tuple[str, ...] = ()  # exact host names, or "*.example.com" for its subdomains
    allow_private: bool = False  # loopback, link-local, private, reserved: refused unless True
    timeout_s: float = 10.0  # seconds for the whole download
    max_bytes: int = 20 * 1024 * 1024  # bytes of one image

    def check_host(self, url: str) -> str:
        """The URL's host if its scheme is http(s) and its host is allowed; :class:`URLRefused` otherwise.
        No network access: this runs on the event loop before a request is queued."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise URLRefused(f"only http(s) image URLs and data: URIs are accepted, got scheme {parts.scheme!r}")
        host = (parts.hostname or "").rstrip(".").lower()
        if not host:
            raise URLRefused(f"image URL {url!r} has no host")
        if not any(_host_matches(host, pattern) for pattern in self.allowed_hosts):
            allowed = ", ".join(self.allowed_hosts) or "none"
            raise URLRefused(
                f"image URL host {host!r} is not on the allowlist (allowed: {allowed}; "
                "start the server with --allow-image-host to add it)"
            )
        return host

    def resolve(self, host: str, port: int) -> str:
        """One address of ``host`` that may be connected to; :class:`URLRefused` when any address it resolves
        to is not global (a name with one private address among public ones is refused as a whole)."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise URLRefused(f"image URL host {host!r} does not resolve ({exc})") from exc
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not self.allow_private:
            for address in addresses:
                kind = _non_global_kind(ipaddress.ip_address(address.split("%", 1)[0]))
                if kind is not None:
                    raise URLRefused(
                        f"image URL host {host!r} resolves to {address}, a non-global address ({kind}); such "
                        "addresses are never fetched unless the server runs with --allow-private-image-addresses"
                    )
        return addresses[0]

    def fetch(self, url: str) -> bytes:
        """The bytes at ``url``, within the policy: the engine's ``image_fetcher``."""
        with httpx.Client(timeout=self.timeout_s, follow_redirects=False, trust_env=False) as client:
            for _ in range(MAX_REDIRECTS + 1):
                host = self.check_host(url)
                parts = urlsplit(url)
                port = parts.port or (443 if parts.scheme == "https" else 80)
                address = self.resolve(host, port)
                # Connect to the address just checked; Host and TLS name stay the URL's own.
                netloc = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
                pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
                headers = {"Host": parts.netloc.rsplit("@", 1)[-1]}
                extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
                with client.stream("GET", pinned, headers=headers, extensions=extensions) as response:
                    if response.is_redirect:
                        url = str(httpx.URL(url).join(response.headers.get("location", "")))
                        continue
                    if response.status_code != 200:
                        raise ImageLoadError(f"fetching {url} answered HTTP {response.status_code}")
                    declared = response.headers.get("content-length")
                    if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
                        raise ImageLoadError(f"{url} is {declared} bytes, over the limit of {self.max_bytes}")
                    body = bytearray()
                    for chunk in response.iter_bytes():
                        body += chunk
                        if len(body) > self.max_bytes:
                            raise ImageLoadError(f"{url} is over the limit of {self.max_bytes} bytes")
                    return bytes(body)
        raise ImageLoadError(f"{url}: more than {MAX_REDIRECTS} redirects")


def _host_matches(host: str, pattern: str) -> bool:
    pattern = pattern.rstrip(".").lower()
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and host != pattern[2:]
    return host == pattern


def _non_global_kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """What makes an address unfit for a server-side fetch, or None for a global unicast address."""
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:  # ::ffff:127.0.0.1 is 127.0.0.1
        address = mapped
    for kind, test in (  # the most specific name first: 127.0.0.1 and 0.0.0.0 are "private" too
        ("loopback", address.is_loopback),
        ("unspecified", address.is_unspecified),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
    ):
        if test:
            return kind
    return None if address.is_global else "non-global"
