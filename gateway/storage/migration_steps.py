"""The named Python steps a migration file calls with ``-- run: <step>``: what plain SQL cannot say.

Each step runs inside its migration's transaction, with the storage policy. The choice
between TimescaleDB and plain partitions is made once, by migration 1, and recorded in
``storage_mode``; later steps read it back.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from gateway.storage import rollups
from gateway.storage.partitions import storage_mode
from gateway.storage.policy import StoragePolicy
from gateway.storage.tables import TIME_SERIES
from gateway.storage.timescale import choose_mode, drop_time_indexes, make_hypertable, timescale_state

Step = Callable[[psycopg.Connection[tuple[object, ...]], StoragePolicy], None]


def time_series_tables(conn: psycopg.Connection[tuple[object, ...]], policy: StoragePolicy) -> None:
    """Hypertables (compression, retention) under TimescaleDB, else tables partitioned by day."""
    mode = choose_mode(timescale_state(conn), policy.engine, None)
    timescale = mode == "timescaledb"
    if timescale:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    for table in TIME_SERIES:
        conn.execute(table.create_sql(partitioned=not timescale))
        if timescale:
            make_hypertable(conn, table, policy)
    conn.execute("INSERT INTO storage_mode (mode) VALUES (%s) ON CONFLICT DO NOTHING", (mode,))


def hypertable_time_indexes(conn: psycopg.Connection[tuple[object, ...]], policy: StoragePolicy) -> None:
    """Under TimescaleDB, drop the ``(time DESC)`` index no query uses (see timescale.make_hypertable)."""
    if storage_mode(conn) == "timescaledb":
        drop_time_indexes(conn)


def hourly_rollups(conn: psycopg.Connection[tuple[object, ...]], policy: StoragePolicy) -> None:
    """Continuous aggregates under TimescaleDB, plain tables and views otherwise (gateway/storage/rollups.py)."""
    rollups.create(conn, storage_mode(conn), policy)


STEPS: dict[str, Step] = {
    "time_series_tables": time_series_tables,
    "hypertable_time_indexes": hypertable_time_indexes,
    "hourly_rollups": hourly_rollups,
}
