"""Downloading an allow-listed http(s) image: public addresses only, one host, a deadline and a byte cap.

The host must be one of the allowed domains (or a subdomain of one). It is resolved once; every address
must be public (no private, loopback, link-local, multicast, reserved or unspecified address), and the
connection goes to that checked address (the name is still sent as Host and TLS server name), so a second
DNS answer cannot point the download elsewhere. Redirects are followed only on the same host (each one
checked again). The whole download has one deadline; the body is refused past the byte cap, from
Content-Length when given and while reading otherwise.
"""
from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from typing import Callable
from urllib.parse import urljoin, urlsplit

from .errors import bad_request

Resolver = Callable[[str, int], list[str]]


def resolve(host: str, port: int) -> list[str]:
    return sorted({info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
                                 or ip.is_reserved or ip.is_unspecified)


def host_allowed(host: str, domains: tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    return any(host == d or host.endswith("." + d) for d in (d.lower().strip(".") for d in domains if d))


class _Pinned(http.client.HTTPConnection):
    """An HTTP connection to a checked address, whatever the name resolves to now."""

    def __init__(self, host: str, address: str, port: int, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedTLS(http.client.HTTPSConnection):
    def __init__(self, host: str, address: str, port: int, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def fetch(url: str, domains: tuple[str, ...], max_bytes: int, timeout: float, max_redirects: int = 3,
          resolver: Resolver = resolve, address_ok: Callable[[str], bool] = is_public, param: str | None = None) -> bytes:
    """The body of ``url``; an APIError (400) saying why when the URL, a redirect or the answer is refused."""
    deadline = time.monotonic() + timeout
    first_host = urlsplit(url).hostname
    for _ in range(max_redirects + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise bad_request(f"image URL {url[:80]!r} is not an http(s) URL", param, "invalid_image_url")
        host = parts.hostname
        if host != first_host:
            raise bad_request(f"image URL redirects from {first_host} to another host ({host}); refused",
                              param, "image_url_redirect")
        if not host_allowed(host, domains):
            raise bad_request(f"images from {host} are not allowed (allowed: {', '.join(domains)})",
                              param, "image_domain_not_allowed")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            addresses = resolver(host, port)
        except OSError as e:
            raise bad_request(f"cannot resolve {host}: {e}", param, "image_url_unreachable") from None
        bad = [a for a in addresses if not address_ok(a)]
        if not addresses or bad:
            raise bad_request(f"{host} resolves to a non-public address ({', '.join(bad) or 'none'}); refused",
                              param, "image_url_private_address")
        conn_cls = _PinnedTLS if parts.scheme == "https" else _Pinned
        conn = conn_cls(host, addresses[0], port, max(0.01, deadline - time.monotonic()))
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request("GET", path, headers={"Host": parts.netloc, "User-Agent": "vlbridge-serve",
                                               "Accept": "image/*"})
            resp = conn.getresponse()
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.getheader("Location")
                if not location:
                    raise bad_request(f"image URL {url[:80]!r} redirects nowhere", param, "image_url_redirect")
                url = urljoin(url, location)
                continue
            if resp.status != 200:
                raise bad_request(f"image URL {url[:80]!r} answered HTTP {resp.status}", param, "image_url_unreachable")
            declared = resp.getheader("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise bad_request(f"image at {url[:80]!r} is {declared} bytes, more than the limit {max_bytes}",
                                  param, "image_too_large")
            body = bytearray()
            while True:
                if time.monotonic() > deadline:
                    raise bad_request(f"downloading {url[:80]!r} took longer than {timeout:g} s", param,
                                      "image_url_timeout")
                chunk = resp.read(65536)
                if not chunk:
                    return bytes(body)
                body += chunk
                if len(body) > max_bytes:
                    raise bad_request(f"image at {url[:80]!r} is more than the limit of {max_bytes} bytes",
                                      param, "image_too_large")
        except (socket.timeout, TimeoutError):
            raise bad_request(f"downloading {url[:80]!r} took longer than {timeout:g} s", param,
                              "image_url_timeout") from None
        except (OSError, http.client.HTTPException) as e:
            raise bad_request(f"cannot download {url[:80]!r}: {type(e).__name__}: {e}", param,
                              "image_url_unreachable") from None
        finally:
            conn.close()
    raise bad_request(f"image URL {url[:80]!r} redirects more than {max_redirects} times", param, "image_url_redirect")
