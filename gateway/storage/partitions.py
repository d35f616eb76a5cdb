"""Native daily partitions, the storage path without TimescaleDB: created ahead, dropped past retention.

The upkeep re-reads the policy on every run, so a changed ``retention_days`` takes effect
at the next start-up or upkeep. Under TimescaleDB these functions do nothing: chunks and
the retention policy do this job (gateway/storage/timescale.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg import sql

from gateway.storage.policy import StoragePolicy
from gateway.storage.tables import TIME_SERIES

log = logging.getLogger(__name__)

MIGRATION_LOCK = 7_311_001  # advisory lock key for schema changes (migrations and partition upkeep)


def storage_mode(conn: psycopg.Connection[tuple[object, ...]]) -> str:
    """``timescaledb`` or ``partitioned``, as migration 1 recorded it."""
    row = conn.execute("SELECT mode FROM storage_mode").fetchone()
    return str(row[0]) if row else "unknown"


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def partition_day(table: str, name: str) -> date | None:
    """The day a partition of ``table`` holds, from its name; None for anything else."""
    prefix = f"{table}_p"
    if not name.startswith(prefix):
        return None
    try:
        return datetime.strptime(name[len(prefix) :], "%Y%m%d").date()
    except ValueError:
        return None


def partitions_of(conn: psycopg.Connection[tuple[object, ...]]) -> set[str]:
    return {
        str(r[0]) for r in conn.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid")
    }


def maintain_partitions(
    conn: psycopg.Connection[tuple[object, ...]],
    policy: StoragePolicy,
    now: datetime,
    extra_days: Sequence[date] = (),
) -> int:
    """Create daily partitions around ``now`` (and for ``extra_days``); drop expired ones.

    Returns the number of partitions created. A no-op under TimescaleDB.
    """
    if storage_mode(conn) != "partitioned":
        return 0
    today = now.astimezone(UTC).date()
    days = {today + timedelta(days=d) for d in range(-policy.past_days, policy.ahead_days + 1)}
    days.update(extra_days)
    oldest_kept = today - timedelta(days=policy.retention_days)
    created = 0
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        existing = partitions_of(conn)
        for table in TIME_SERIES:
            for day in sorted(days):
                if day < oldest_kept:
                    continue
                name = partition_name(table.name, day)
                if name in existing:
                    continue
                conn.execute(
                    sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                        sql.Identifier(name),
                        sql.Identifier(table.name),
                        sql.Literal(day.isoformat() + "T00:00:00Z"),
                        sql.Literal((day + timedelta(days=1)).isoformat() + "T00:00:00Z"),
                    )
                )
                created += 1
            for name in sorted(existing):
                held = partition_day(table.name, name)
                if held is not None and held < oldest_kept:
                    log.info("dropping expired partition %s", name)
                    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
    return created
