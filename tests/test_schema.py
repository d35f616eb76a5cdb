"""Schema: idempotent versioned upgrade, partitions ahead, expiry, auto-created partitions."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
from psycopg_pool import AsyncConnectionPool

from gateway.pipeline.batch import DecodedBatch, TableRows
from gateway.storage import tables
from gateway.storage.binary_copy import Column
from gateway.storage.schema import StoragePolicy, maintain_partitions, partition_name, upgrade
from gateway.storage.writer import TelemetryWriter
from tests.support import query


def partitions(dsn: str, table: str) -> set[str]:
    return {
        r[0]
        for r in query(
            dsn,
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c "
            "ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
            "WHERE p.relname = %s",
            (table,),
        )
    }


def test_upgrade_is_versioned_and_idempotent(database: str) -> None:
    assert upgrade(database) == [1, 2, 3, 4, 5, 6, 7, 8, 30]
    assert upgrade(database) == []
    assert query(database, "SELECT version FROM schema_migrations ORDER BY 1") == [
        (1,),
        (2,),
        (3,),
        (4,),
        (5,),
        (6,),
        (7,),
        (8,),
        (30,),
    ]
    assert query(database, "SELECT mode FROM storage_mode") == [("partitioned",)]


def test_partitions_cover_the_accepted_window_and_expire(database: str) -> None:
    now = datetime(2026, 11, 22, 12, tzinfo=UTC)
    policy = StoragePolicy(past_days=2, ahead_days=3, retention_days=30)
    upgrade(database, policy, now=now)
    today = now.date()
    expected = {partition_name("telemetry_wristband", today + timedelta(days=d)) for d in range(-2, 4)}
    assert partitions(database, "telemetry_wristband") == expected
    later = now + timedelta(days=40)
    with psycopg.connect(database, autocommit=True) as conn:
        maintain_partitions(conn, policy, later)
    left = partitions(database, "telemetry_wristband")
    assert all(name >= partition_name("telemetry_wristband", later.date() - timedelta(days=30)) for name in left)
    assert partition_name("telemetry_wristband", later.date()) in left


def test_writer_creates_a_missing_partition_and_stores_the_row(database: str) -> None:
    upgrade(database)
    day = datetime.now(UTC).date()
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(f"DROP TABLE {partition_name('telemetry_glucose', day)}")
    ms = int(datetime.now(UTC).timestamp() * 1000)
    rows = TableRows(
        tables.GLUCOSE,
        (
            Column("timestamptz_ms", np.array([ms], np.int64)),
            Column("text", np.array([b"gl-1"], dtype=object)),
            Column("float4", np.array([5.5], np.float32)),
            Column("text", np.array([b"fasting"], dtype=object)),
        ),
    )

    async def write() -> None:
        async with AsyncConnectionPool(database, min_size=1, max_size=2) as pool:
            writer = TelemetryWriter(pool)
            await writer.write(DecodedBatch(tables=[rows], received_ms=ms))
            # the same batch again (a redelivery) is stored once, not twice or as an error
            await writer.write(DecodedBatch(tables=[rows], received_ms=ms))

    asyncio.run(write())
    assert query(database, "SELECT device_id, glucose_mmol FROM telemetry_glucose") == [("gl-1", 5.5)]


def test_migration_30_gives_old_grid_worker_accounts_the_only_community(database: str) -> None:
    upgrade(database)
    from gateway.storage.schema import _migration_30

    with psycopg.connect(database) as conn:
        conn.execute(
            "INSERT INTO elders (elder_id, name, community, grid, profile) "
            "VALUES ('e1', 'A', '和平社区', '网格1', '{}')"
        )
        conn.execute(
            "INSERT INTO users (username, password_hash, role, display_name, grid) "
            "VALUES ('old', 'x', 'grid_worker', 'old', '网格1')"
        )
        _migration_30(conn, StoragePolicy())
        assert conn.execute("SELECT community FROM users").fetchall() == [("和平社区",)]
        conn.execute("UPDATE users SET community = NULL")
        conn.execute(
            "INSERT INTO elders (elder_id, name, community, grid, profile) "
            "VALUES ('e2', 'B', '幸福社区', '网格1', '{}')"
        )
        _migration_30(conn, StoragePolicy())
        assert conn.execute("SELECT community FROM users").fetchall() == [(None,)]  # which 网格1? the console asks
