"""Checks on a request before its handler runs: who the client really is, and where a change comes from.

Client address. uvicorn is started with ``proxy_headers=False``, so ``X-Forwarded-For``
is not believed by default: anyone could send it and get a fresh login allowance per
request. Only a peer listed in ``api.trusted_proxies`` may name the client; its header
is read from the right, skipping the trusted proxies, and the first other address is
the client (what the proxy itself saw, not what the caller claims).

Same origin. ``SameSite=Strict`` stops other *sites*, but a page on another port or
subdomain of the same host is the same site, so its form posts carry the session
cookie. Every state-changing request (POST, PUT, PATCH, DELETE) must therefore:

* not come from another origin: ``Sec-Fetch-Site`` (sent by every current browser)
  is ``same-origin`` or ``none``, and an ``Origin`` header equals the console's own
  origin (the ``Host`` it called) or one of ``api.allowed_origins``;
* send its body as ``application/json`` (the registry import: ``multipart/form-data``),
  which a cross-origin form cannot do and ``fetch`` cannot do without a CORS
  preflight that this server never grants;
* when the session comes from the cookie, carry ``X-Requested-With`` (any value), a
  header no form can add. Scripts using a bearer token are not affected: a browser
  never adds a bearer token by itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import urlsplit

from starlette.requests import Request

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSRF_HEADER = "x-requested-with"
_SAME = frozenset({"same-origin", "none"})

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=64)
def _networks(proxies: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(p, strict=False) for p in proxies)


def _trusted(address: str, networks: Iterable[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_address(request: Request, trusted_proxies: tuple[str, ...] = ()) -> str:
    """The client's address: the TCP peer, or what a trusted proxy says it saw."""
    peer = request.client.host if request.client else "unknown"
    if not trusted_proxies:
        return peer
    networks = _networks(trusted_proxies)
    if not _trusted(peer, networks):
        return peer
    hops = [h.strip() for v in request.headers.getlist("x-forwarded-for") for h in v.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            return hop[:64]
    return hops[0][:64] if hops else peer


def _own_origins(request: Request, allowed: tuple[str, ...]) -> set[str]:
    host = request.headers.get("host", "")
    return {f"http://{host}", f"https://{host}", *(o.rstrip("/") for o in allowed)}


def cross_origin(request: Request, allowed_origins: tuple[str, ...]) -> str | None:
    """Why a state-changing request looks sent by a page of another origin, or None."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site.lower() not in _SAME:
        return f"A {site} request may not change anything; use the console itself."
    origin = request.headers.get("origin")
    if origin is not None:
        parts = urlsplit(origin)
        normal = f"{parts.scheme}://{parts.netloc}".lower()
        if normal not in {o.lower() for o in _own_origins(request, allowed_origins)}:
            return f"A request from another origin ({origin[:100]}) may not change anything."
    return None


def media_type(request: Request) -> str:
    """The declared body type without parameters (``application/json; charset=utf-8`` -> ``application/json``)."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
