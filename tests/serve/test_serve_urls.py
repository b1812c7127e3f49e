"""The image-URL guard on its own: host patterns, schemes, non-global addresses, redirects re-checked, byte limit;
against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from minirerank_integrations import ImageLoadError
from minirerank_integrations.serve.urls import URLPolicy, URLRefused


def test_hosts_and_schemes() -> None:
    policy = URLPolicy(allowed_hosts=("images.example.com", "*.cdn.example.org"))
    assert policy.check_host("https://IMAGES.example.com./a.png") == "images.example.com"
    assert policy.check_host("https://eu.cdn.example.org/a.png") == "eu.cdn.example.org"
    for refused, why in [
        ("https://cdn.example.org/a.png", "not on the allowlist"),  # the wildcard names subdomains only
        ("https://images.example.com.evil.net/a.png", "not on the allowlist"),
        ("file:///etc/passwd", "scheme 'file'"),
        ("ftp://images.example.com/a.png", "scheme 'ftp'"),
        ("http:///a.png", "has no host"),
    ]:
        with pytest.raises(URLRefused, match=why):
            policy.check_host(refused)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),  # cloud metadata endpoints
        ("10.1.2.3", "private"),
        ("192.168.0.1", "private"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # an IPv4-mapped IPv6 address is its IPv4 address
        ("0.0.0.0", "unspecified"),
    ],
)
def test_non_global_addresses_are_refused(address: str, kind: str) -> None:
    with pytest.raises(URLRefused, match=rf"non-global address \({kind}\)"):
        URLPolicy(allowed_hosts=(address,)).resolve(address, 80)
    assert URLPolicy(allowed_hosts=(address,), allow_private=True).resolve(address, 80) == address


@pytest.fixture
def web() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1: /big is 5000 bytes, /elsewhere redirects to a host not on any list."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            if self.path == "/elsewhere":
                self.send_response(302)
                self.send_header("Location", "http://not-allowed.example.net/x.png")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = b"x" * 5000
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_redirects_are_checked_and_downloads_bounded(web: str) -> None:
    policy = URLPolicy(allowed_hosts=("127.0.0.1",), allow_private=True, max_bytes=10_000)
    assert len(policy.fetch(f"{web}/big")) == 5000
    with pytest.raises(URLRefused, match="'not-allowed.example.net' is not on the allowlist"):
        policy.fetch(f"{web}/elsewhere")
    with pytest.raises(ImageLoadError, match="over the limit of 1000"):
        URLPolicy(allowed_hosts=("127.0.0.1",), allow_private=True, max_bytes=1000).fetch(f"{web}/big")
    with pytest.raises(URLRefused, match="loopback"):
        URLPolicy(allowed_hosts=("127.0.0.1",)).fetch(f"{web}/big")
