"""Follow the registry in the database: elders, devices, fences and responders edited anywhere.

Triggers move the ``registry_version`` sequence on every change (schema migration 6);
each process that detects or pages polls it and reloads when it moved, so a fence edited
in the console or an import takes effect in every running process without a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from gateway.domain.registry import RegistryFile
from gateway.domain.registry_db import load_registry_from_db
from gateway.error_text import first_line

log = logging.getLogger(__name__)


def registry_version(dsn: str, kwargs: dict[str, Any]) -> int:
    with psycopg.connect(dsn, autocommit=True, **kwargs) as conn:
        row = conn.execute("SELECT last_value FROM registry_version").fetchone()
        return int(row[0]) if row else 0


def registry_from_db(dsn: str, kwargs: dict[str, Any]) -> RegistryFile:
    with psycopg.connect(dsn, **kwargs) as conn:
        return load_registry_from_db(conn)


async def watch_registry(
    dsn: str,
    kwargs: dict[str, Any],
    every_s: float,
    changed: Callable[[RegistryFile], Awaitable[None]],
    *,
    loaded: bool = True,
) -> None:
    """Call ``changed`` with the new registry whenever the version moves; until cancelled.

    ``loaded=False``: what the caller holds did not come from the database (it was away at
    start-up), so the first version seen counts as a change.
    """
    seen: int | None = None
    while True:
        try:
            current = await asyncio.to_thread(registry_version, dsn, kwargs)
            if (seen is None and not loaded) or (seen is not None and current != seen):
                registry = await asyncio.to_thread(registry_from_db, dsn, kwargs)
                await changed(registry)
                loaded = True
            seen = current
        except psycopg.Error as error:
            log.debug("registry watch: %s", first_line(error))
        await asyncio.sleep(every_s)
