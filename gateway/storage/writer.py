"""TelemetryWriter: one transaction per decoded batch, binary COPY per table.

Fast path: ``COPY table FROM STDIN (FORMAT BINARY)`` straight into each table.
A batch that may repeat rows already stored (the broker redelivered it after a crash,
a device re-sent a reading, or a spooled batch is replayed) goes through the
idempotent path instead: COPY into a temporary staging table, then
``INSERT ... ON CONFLICT DO NOTHING``, so every reading is stored exactly once.

Rows more than ``LATE_MS`` old when written may land below a rollup's watermark (the
refresh stops that far before the hour); the batch then records their time span in
``rollup_invalidations`` (one row, rarely: a backlog, a replay), so the plain-partition
rollups re-aggregate those hours (gateway/storage/rollups.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, date, datetime

import psycopg
from psycopg import errors, sql
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from gateway.pipeline.batch import DecodedBatch, TableRows
from gateway.storage.binary_copy import COPY_HEADER, COPY_TRAILER, encode_rows
from gateway.storage.partitions import maintain_partitions
from gateway.storage.policy import StoragePolicy
from gateway.storage.rollups import BY_SOURCE, LATE_MS

log = logging.getLogger(__name__)


class StorageUnavailable(Exception):
    """The database cannot be reached; the batch should be spooled and retried."""


class StorageRejected(Exception):
    """The database refused the data itself (not the connection)."""


_UNREACHABLE = (psycopg.OperationalError, psycopg.InterfaceError)


def _days_in(decoded: DecodedBatch) -> set[date]:
    days: set[date] = set()
    for rows in decoded.tables:
        ts = rows.columns[0].values
        if len(ts):
            for ms in (int(ts.min()), int(ts.max())):
                days.add(datetime.fromtimestamp(ms / 1000, UTC).date())
    return days


def _late_span(rows: TableRows, now_ms: int) -> tuple[str, datetime, datetime] | None:
    """(table, oldest, newest) when a rolled-up table gets rows older than ``LATE_MS``."""
    if rows.spec.name not in BY_SOURCE:
        return None
    ts = rows.columns[0].values
    oldest = int(ts.min())
    if oldest >= now_ms - LATE_MS:
        return None
    return (
        rows.spec.name,
        datetime.fromtimestamp(oldest / 1000, UTC),
        datetime.fromtimestamp(int(ts.max()) / 1000, UTC),
    )


class TelemetryWriter:
    """Writes decoded batches through a psycopg async pool."""

    def __init__(self, pool: AsyncConnectionPool, policy: StoragePolicy | None = None) -> None:
        self.pool = pool
        self.policy = policy or StoragePolicy()

    async def write(self, decoded: DecodedBatch, *, idempotent: bool = False) -> None:
        """Store the batch durably or raise ``StorageUnavailable``/``StorageRejected``."""
        try:
            await self._write(decoded, idempotent=idempotent)
        except errors.UniqueViolation:
            if idempotent:
                raise
            await self.write(decoded, idempotent=True)
        except errors.CheckViolation as error:
            # "no partition of relation ... found for row": make the partitions and retry.
            if "partition" not in str(error):
                raise StorageRejected(str(error)) from error
            await self._ensure_partitions(decoded)
            await self.write(decoded, idempotent=idempotent)  # again through the handling above
        except _UNREACHABLE as error:
            raise StorageUnavailable(str(error)) from error
        except psycopg.Error as error:
            raise StorageRejected(str(error)) from error
        except TimeoutError as error:  # pool.connection() timed out: no database
            raise StorageUnavailable(f"no database connection: {error}") from error

    async def _write(self, decoded: DecodedBatch, *, idempotent: bool) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            late = []
            for rows in decoded.tables:
                if len(rows):
                    await self._copy(conn, rows, idempotent)
                    span = _late_span(rows, int(time.time() * 1000))
                    if span is not None:
                        late.append(span)
            if late:
                async with conn.cursor() as cur:
                    await cur.executemany(
                        "INSERT INTO rollup_invalidations (source, from_time, to_time) VALUES (%s, %s, %s)", late
                    )
            if decoded.detections:
                async with conn.cursor() as cur:
                    await cur.executemany(
                        "INSERT INTO detections (elder_id, device_id, kind, severity, ts, cleared, "
                        "evidence) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                        [
                            (
                                d.elder_id,
                                d.device_id,
                                d.kind,
                                d.severity,
                                datetime.fromtimestamp(d.ts_ms / 1000, UTC),
                                d.cleared,
                                Jsonb(d.evidence),
                            )
                            for d in decoded.detections
                        ],
                    )
            if decoded.dead_letters:
                async with conn.cursor().copy(
                    "COPY dead_letters (received_at, topic, reason, payload) FROM STDIN"
                ) as copy:
                    for d in decoded.dead_letters:
                        await copy.write_row(
                            (datetime.fromtimestamp(d.received_ms / 1000, UTC), d.topic, d.reason, d.payload)
                        )

    async def _copy(self, conn: psycopg.AsyncConnection[tuple[object, ...]], rows: TableRows, idempotent: bool) -> None:
        data = COPY_HEADER + encode_rows(list(rows.columns)) + COPY_TRAILER
        spec = rows.spec
        if not idempotent:
            statement = sql.SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(sql.Identifier(spec.name))
            async with conn.cursor().copy(statement) as copy:
                await copy.write(data)
            return
        stage = sql.Identifier(f"stage_{spec.name}")
        await conn.execute(
            sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS").format(
                stage, sql.Identifier(spec.name)
            )
        )
        async with conn.cursor().copy(sql.SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(stage)) as copy:
            await copy.write(data)
        await conn.execute(
            sql.SQL("INSERT INTO {} SELECT * FROM {} ON CONFLICT DO NOTHING").format(sql.Identifier(spec.name), stage)
        )

    async def _ensure_partitions(self, decoded: DecodedBatch) -> None:
        """Partition upkeep is sync code; it runs in a thread on its own connection."""
        days = sorted(_days_in(decoded))
        log.info("creating partitions for %s", ", ".join(d.isoformat() for d in days))
        async with self.pool.connection() as conn:
            dsn, password = conn.info.dsn, conn.info.password

        def work() -> None:
            with psycopg.connect(dsn, password=password, autocommit=True) as sync_conn:
                maintain_partitions(sync_conn, self.policy, datetime.now(UTC), days)

        await asyncio.to_thread(work)
