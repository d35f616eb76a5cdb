"""A reconnecting database connection for the cluster's own loops."""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg


class DatabaseLink:
    """One autocommit connection, opened when first needed and again after a failure."""

    def __init__(self, dsn: str, kwargs: dict[str, object]) -> None:
        self.dsn, self.kwargs = dsn, kwargs
        self._conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None

    async def connection(self) -> psycopg.AsyncConnection[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True, **self.kwargs)  # type: ignore[arg-type]
        return self._conn

    async def drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()

    async def __aenter__(self) -> DatabaseLink:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.drop()
