"""The ``api`` section of the configuration: sessions, login throttling, uploads, live updates.

Kept beside the API (like ``EscalationConfig`` beside the rules) so the knobs live with
the code they tune; ``gateway.config`` only mounts it.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta


class ApiConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Console API settings; the defaults suit a post station on a LAN."""

    session_ttl_h: Annotated[float, Meta(gt=0, le=24 * 30)] = 12.0
    cookie_secure: bool = True  # the session cookie goes over HTTPS only; false only for a plain-http local demo
    # proxies (addresses or CIDR networks) whose X-Forwarded-For names the real client; none: the header is ignored
    trusted_proxies: tuple[str, ...] = ()
    # origins besides the console's own (``Host``) allowed to send state-changing requests, e.g. "https://hotline.example"
    allowed_origins: tuple[str, ...] = ()
    login_max_failures: Annotated[int, Meta(ge=1, le=1000)] = 5  # per username and client address, per window
    login_max_failures_ip: Annotated[int, Meta(ge=1, le=10_000)] = 20  # per client address, per window
    login_window_s: Annotated[float, Meta(gt=0)] = 900.0
    max_upload_bytes: Annotated[int, Meta(ge=1024, le=100 * 1024 * 1024)] = 5 * 1024 * 1024
    events_poll_s: Annotated[float, Meta(gt=0, le=10)] = 0.5
    events_ping_s: Annotated[float, Meta(gt=0, le=300)] = 15.0
    console_tile_url: str | None = None  # an XYZ tile template for the console's base map; none: offline

    def __post_init__(self) -> None:
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(f"api.trusted_proxies: {proxy!r} is not an address or network") from None
        for origin in self.allowed_origins:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
                raise ValueError(f"api.allowed_origins: {origin!r} is not an origin like https://console.example")
