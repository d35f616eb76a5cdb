"""Routes the gateway mounts next to its webhooks, health and metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

if TYPE_CHECKING:
    from gateway.service import Gateway


def api_routes(gateway: Gateway) -> list[BaseRoute]:
    """The console API and page, served by the running gateway."""
    return []
