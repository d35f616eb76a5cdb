"""The operator console: a static page (plain ES modules, hand-written CSS) served at ``/console/``.

Nothing is built and nothing is fetched from the internet: the page draws its map and
charts from the API's data. The Content-Security-Policy says so to the browser too;
an online tile layer is allowed only when a tile URL is configured.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

STATIC_DIR = Path(__file__).resolve().parent / "static"


class _ConsoleFiles(StaticFiles):
    """Static files with a strict Content-Security-Policy and no stale caching of the page."""

    def __init__(self, policy: str) -> None:
        super().__init__(directory=STATIC_DIR, html=True)
        self.policy = policy.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"content-security-policy", self.policy))
                headers.append((b"x-content-type-options", b"nosniff"))
                headers.append((b"cache-control", b"no-cache"))
                message = {**message, "headers": headers}
            await send(message)

        await super().__call__(scope, receive, send_with_headers)


def _policy(tile_url: str | None) -> str:
    images = "'self' data: blob:"
    if tile_url:
        parts = urlsplit(tile_url.replace("{s}", "SUBDOMAIN"))
        if parts.scheme in ("http", "https") and parts.netloc:
            images += f" {parts.scheme}://{parts.netloc.replace('SUBDOMAIN', '*')}"
    return (
        f"default-src 'self'; img-src {images}; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    )


def console_routes(*, tile_url: str | None = None) -> list[BaseRoute]:
    """``/console/`` (the page and its files), ``/console`` redirecting there, and the page's settings.

    ``tile_url`` is an XYZ template (``https://tiles.example/{z}/{x}/{y}.png``) for an online
    base map under the drawn one; without it (the default) the page makes no outside request.
    """
    settings = json.dumps({"tile_url": tile_url}).encode()

    async def console_settings(request: Request) -> Response:
        return Response(settings, media_type="application/json", headers={"cache-control": "no-cache"})

    async def to_console(request: Request) -> Response:
        return RedirectResponse("/console/" + (f"?{request.url.query}" if request.url.query else ""), 308)

    return [
        Route("/console", to_console, methods=["GET", "HEAD"]),
        Route("/console/settings.json", console_settings, methods=["GET"]),
        Mount("/console", app=_ConsoleFiles(_policy(tile_url)), name="console"),
    ]
