"""TimescaleDB: is it usable here, hypertables, and policies that follow the configuration.

The extension must be both installed and preloaded (``shared_preload_libraries``):
``CREATE EXTENSION`` fails otherwise, so an installed-but-not-preloaded server is refused
with a message that says the two ``postgresql.conf`` lines, instead of failing mid-migration.
Compression and retention policies are compared with the policy on every upgrade
(start-up and ``eldercare db upgrade``) and replaced when they differ, so a changed
``storage.retention_days`` or ``storage.compress_after_days`` takes effect.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg
from psycopg import sql

from gateway.storage.policy import Engine, StoragePolicy, StorageSetupError
from gateway.storage.tables import TIME_SERIES, TableSpec

log = logging.getLogger(__name__)

PRELOAD_HELP = (
    "add to postgresql.conf and restart PostgreSQL:\n"
    "  shared_preload_libraries = 'timescaledb'\n"
    "  timescaledb.telemetry_level = off\n"
    "or set storage.engine: partitions in the gateway config to use plain partitions"
)


@dataclass(frozen=True, slots=True)
class TimescaleState:
    installed: bool  # the package is on the server (pg_available_extensions)
    preloaded: bool  # and in shared_preload_libraries
    created: bool  # CREATE EXTENSION has run in this database


def timescale_state(conn: psycopg.Connection[tuple[object, ...]]) -> TimescaleState:
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'), "
        "current_setting('shared_preload_libraries'), "
        "EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')"
    ).fetchone()
    assert row is not None
    libraries = {part.strip().strip('"').strip("'") for part in str(row[1]).split(",")}
    return TimescaleState(installed=bool(row[0]), preloaded="timescaledb" in libraries, created=bool(row[2]))


def choose_mode(state: TimescaleState, engine: Engine, recorded: str | None) -> str:
    """``timescaledb`` or ``partitioned`` for this database, or a StorageSetupError saying why neither."""
    if recorded == "partitioned":
        return recorded
    if recorded == "timescaledb" or engine == "timescaledb":
        if not state.installed:
            raise StorageSetupError(
                "TimescaleDB is not installed on this PostgreSQL server"
                + (" but this database was created with it" if recorded else "")
                + ": install the timescaledb-2-postgresql-15 package from Timescale's apt repository "
                "(https://docs.timescale.com/self-hosted/latest/install/installation-linux/), then "
                + PRELOAD_HELP.split("\n", 1)[0]
            )
        if not state.preloaded:
            raise StorageSetupError(f"TimescaleDB is installed but not preloaded: {PRELOAD_HELP}")
        return "timescaledb"
    if engine == "partitions" or not state.installed:
        return "partitioned"
    if not state.preloaded:
        raise StorageSetupError(f"TimescaleDB is installed but not preloaded: {PRELOAD_HELP}")
    return "timescaledb"


def make_hypertable(conn: psycopg.Connection[tuple[object, ...]], table: TableSpec, policy: StoragePolicy) -> None:
    """1-day chunks, compressed segmented by device; only the primary key as index.

    ``create_default_indexes => false``: the default extra ``(time DESC)`` index costs
    every insert and no query here needs it (the key leads with device_id, and every
    reading query names its devices); bench/ingest.py --timescaledb measures the cost.
    """
    conn.execute(
        "SELECT create_hypertable(%s, 'time', chunk_time_interval => interval '1 day', "
        "create_default_indexes => false, if_not_exists => true)",
        (table.name,),
    )
    conn.execute(
        sql.SQL("ALTER TABLE {} SET (timescaledb.compress, timescaledb.compress_segmentby = {})").format(
            sql.Identifier(table.name), sql.Literal(table.segment_by)
        )
    )
    sync_policies(conn, policy, (table,))


def _policy_days(conn: psycopg.Connection[tuple[object, ...]], table: str, proc: str, key: str) -> float | None:
    row = conn.execute(
        "SELECT extract(epoch FROM (config->>%s)::interval) / 86400 FROM timescaledb_information.jobs "
        "WHERE hypertable_schema = current_schema() AND hypertable_name = %s AND proc_name = %s",
        (key, table, proc),
    ).fetchone()
    return None if row is None else float(str(row[0]))


def sync_policies(
    conn: psycopg.Connection[tuple[object, ...]],
    policy: StoragePolicy,
    tables: tuple[TableSpec, ...] = TIME_SERIES,
) -> list[str]:
    """Make each hypertable's compression and retention policy match ``policy``; return what changed."""
    changed: list[str] = []
    wanted = (
        ("policy_compression", "compress_after", policy.compress_after_days, "compression"),
        ("policy_retention", "drop_after", policy.retention_days, "retention"),
    )
    for table in tables:
        for proc, key, days, kind in wanted:
            current = _policy_days(conn, table.name, proc, key)
            if current == days:
                continue
            if current is not None:
                conn.execute(f"SELECT remove_{kind}_policy(%s, if_exists => true)", (table.name,))
                log.info("%s policy of %s: %s -> %s days", kind, table.name, f"{current:g}", days)
            conn.execute(f"SELECT add_{kind}_policy(%s, make_interval(days => %s))", (table.name, days))
            changed.append(f"{table.name} {kind} {days} days")
    return changed


def drop_time_indexes(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Drop the ``<table>_time_idx`` indexes that create_hypertable made before migration 9."""
    for table in TIME_SERIES:
        conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(f"{table.name}_time_idx")))
