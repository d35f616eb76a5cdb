"""Schema: numbered migrations applied once, the right layout for the server's mode, expiry, policies.

Every test runs against whatever server the fixtures start: plain PostgreSQL (``make
test``: daily partitions) or one with TimescaleDB preloaded (``make test-timescaledb``:
hypertables). Each checks the layout of the mode it finds; none is skipped.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg
import pytest
import yaml
from psycopg_pool import AsyncConnectionPool

from gateway.pipeline.batch import DecodedBatch, TableRows
from gateway.storage import migrate, tables
from gateway.storage.binary_copy import Column
from gateway.storage.schema import StoragePolicy, StorageSetupError, maintain_partitions, partition_name, upgrade
from gateway.storage.timescale import TimescaleState, choose_mode
from gateway.storage.writer import TelemetryWriter
from simulators.services.postgres import LocalPostgres
from tests.support import query

# what the code before the SQL files recorded: an existing database has exactly these rows
RECORDED_BEFORE_FILES = [
    (1, "registry, dead letters and time-series tables"),
    (2, "detections and geofences"),
    (3, "alerts, audit trail, tier firings, notification outbox, responders"),
    (4, "webhook receipts (Twilio retries: apply each once)"),
    (5, "console users, sessions, login throttle, audit log; scope indexes"),
    (6, "registry version: running gateways reload elders, devices and fences when it moves"),
    (7, "gateway instances: heartbeats for scale-out ownership"),
    (8, "stored detections notify the alert worker"),
]


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


def chunks(dsn: str, table: str) -> list[tuple[datetime, bool]]:
    return query(
        dsn,
        "SELECT range_start, is_compressed FROM timescaledb_information.chunks "
        "WHERE hypertable_name = %s ORDER BY range_start",
        (table,),
    )


def policy_days(dsn: str, table: str) -> dict[str, float]:
    rows = query(
        dsn,
        "SELECT proc_name, extract(epoch FROM coalesce((config->>'compress_after')::interval, "
        "(config->>'drop_after')::interval)) / 86400 FROM timescaledb_information.jobs "
        "WHERE hypertable_name = %s AND proc_name IN ('policy_compression', 'policy_retention')",
        (table,),
    )
    return {str(name): float(days) for name, days in rows}


def test_every_migration_file_applies_once_in_version_order(database: str, storage_mode: str) -> None:
    versions = [m.version for m in migrate.load()]
    assert versions == sorted(versions) and versions[:10] == list(range(1, 11))
    assert upgrade(database) == versions
    assert upgrade(database) == []
    recorded = query(database, "SELECT version, name FROM schema_migrations ORDER BY 1")
    assert recorded[:8] == RECORDED_BEFORE_FILES
    assert [v for v, _ in recorded] == versions
    assert query(database, "SELECT mode FROM storage_mode") == [(storage_mode,)]


def test_a_database_migrated_before_the_files_upgrades_with_nothing_reapplied(database: str) -> None:
    with psycopg.connect(database) as conn:
        assert migrate.run(conn, StoragePolicy(), [m for m in migrate.load() if m.version <= 8]) == list(range(1, 9))
        conn.execute("UPDATE schema_migrations SET applied_at = '2026-01-01T00:00:00Z'")
        conn.commit()
    applied = upgrade(database)
    assert applied[:2] == [9, 10] and all(v > 8 for v in applied)
    assert query(
        database, "SELECT count(*) FROM schema_migrations WHERE version <= 8 AND applied_at > '2026-01-02'"
    ) == [(0,)]


def test_the_runner_refuses_malformed_files() -> None:
    with pytest.raises(migrate.MigrationError, match="NNNN_short_name"):
        migrate.parse("12_x.sql", "-- x\nSELECT 1;\n")
    with pytest.raises(migrate.MigrationError, match="first line"):
        migrate.parse("0012_x.sql", "SELECT 1;\n")
    with pytest.raises(migrate.MigrationError, match="unknown step 'nope'"):
        migrate.parse("0012_x.sql", "-- x\n-- run: nope\n")
    parsed = migrate.parse("0021_a_b.sql", "-- a and b\nSELECT 1;\n-- run: hourly_rollups\nSELECT 2;\n")
    assert (parsed.version, parsed.name, parsed.steps) == (21, "a and b", ("hourly_rollups",))


def test_the_layout_is_the_one_for_the_mode_and_old_data_expires(database: str, storage_mode: str) -> None:
    now = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    policy = StoragePolicy(past_days=2, ahead_days=3, retention_days=30)
    upgrade(database, policy, now=now)
    indexes = query(
        database,
        "SELECT indexname FROM pg_indexes WHERE tablename = 'telemetry_wristband' ORDER BY 1",
    )
    assert indexes == [("telemetry_wristband_pkey",)]  # no (time DESC) index in either mode
    if storage_mode == "partitioned":
        today = now.date()
        expected = {partition_name("telemetry_wristband", today + timedelta(days=d)) for d in range(-2, 4)}
        assert partitions(database, "telemetry_wristband") == expected
        later = now + timedelta(days=40)
        with psycopg.connect(database, autocommit=True) as conn:
            maintain_partitions(conn, policy, later)
        left = partitions(database, "telemetry_wristband")
        assert all(name >= partition_name("telemetry_wristband", later.date() - timedelta(days=30)) for name in left)
        assert partition_name("telemetry_wristband", later.date()) in left
        return
    hypertables = query(
        database,
        "SELECT h.hypertable_name, d.time_interval, c.segmentby_column_index IS NOT NULL "
        "FROM timescaledb_information.hypertables h "
        "JOIN timescaledb_information.dimensions d USING (hypertable_name) "
        "LEFT JOIN timescaledb_information.compression_settings c "
        "ON c.hypertable_name = h.hypertable_name AND c.attname = 'device_id' "
        "ORDER BY 1",
    )
    assert [name for name, _, _ in hypertables] == sorted(t.name for t in tables.TIME_SERIES)
    assert {(interval, segmented) for _, interval, segmented in hypertables} == {(timedelta(days=1), True)}
    assert policy_days(database, "telemetry_wristband") == {"policy_compression": 7.0, "policy_retention": 30.0}
    old, fresh = now - timedelta(days=40), now - timedelta(hours=1)
    with psycopg.connect(database, autocommit=True) as conn:
        for moment in (old, fresh):
            conn.execute("INSERT INTO telemetry_glucose VALUES (%s, 'gl-1', 5.5, 'fasting')", (moment,))
        job = conn.execute(
            "SELECT job_id FROM timescaledb_information.jobs "
            "WHERE hypertable_name = 'telemetry_glucose' AND proc_name = 'policy_retention'"
        ).fetchone()
        assert job is not None
        conn.execute("CALL run_job(%s)", (job[0],))
    assert [start.date() for start, _ in chunks(database, "telemetry_glucose")] == [fresh.date()]


def test_changed_retention_and_compression_take_effect_at_upgrade(database: str, storage_mode: str) -> None:
    now = datetime.now(UTC)
    upgrade(database, StoragePolicy(retention_days=400, compress_after_days=7), now=now)
    day = now.date() - timedelta(days=300)
    if storage_mode == "partitioned":
        with psycopg.connect(database, autocommit=True) as conn:
            maintain_partitions(conn, StoragePolicy(retention_days=400), now, [day])
        assert partition_name("device_status", day) in partitions(database, "device_status")
    assert upgrade(database, StoragePolicy(retention_days=200, compress_after_days=3), now=now) == []
    if storage_mode == "partitioned":
        assert partition_name("device_status", day) not in partitions(database, "device_status")
        return
    for table in tables.TIME_SERIES:
        assert policy_days(database, table.name) == {"policy_compression": 3.0, "policy_retention": 200.0}
    jobs = query(
        database,
        "SELECT count(*) FROM timescaledb_information.jobs "
        "WHERE proc_name IN ('policy_compression', 'policy_retention')",
    )
    assert jobs == [(2 * len(tables.TIME_SERIES),)]  # replaced, not added beside the old ones


def _glucose_rows(ms: int, device: bytes = b"gl-1") -> TableRows:
    return TableRows(
        tables.GLUCOSE,
        (
            Column("timestamptz_ms", np.array([ms], np.int64)),
            Column("text", np.array([device], dtype=object)),
            Column("float4", np.array([5.5], np.float32)),
            Column("text", np.array([b"fasting"], dtype=object)),
        ),
    )


def _write_twice(database: str, rows: TableRows, ms: int) -> None:
    async def write() -> None:
        async with AsyncConnectionPool(database, min_size=1, max_size=2) as pool:
            writer = TelemetryWriter(pool)
            await writer.write(DecodedBatch(tables=[rows], received_ms=ms))
            # the same batch again (a redelivery) is stored once, not twice or as an error
            await writer.write(DecodedBatch(tables=[rows], received_ms=ms))

    asyncio.run(write())


def test_writer_stores_into_a_missing_partition_or_a_compressed_chunk(database: str, storage_mode: str) -> None:
    upgrade(database)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    day = datetime.now(UTC).date()
    if storage_mode == "partitioned":
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(f"DROP TABLE {partition_name('telemetry_glucose', day)}")
        _write_twice(database, _glucose_rows(now_ms), now_ms)
        assert query(database, "SELECT device_id, glucose_mmol FROM telemetry_glucose") == [("gl-1", 5.5)]
        return
    old_ms = now_ms - 3 * 86_400_000
    _write_twice(database, _glucose_rows(old_ms), now_ms)
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("SELECT compress_chunk(c) FROM show_chunks('telemetry_glucose') c")
    assert [compressed for _, compressed in chunks(database, "telemetry_glucose")] == [True]
    _write_twice(database, _glucose_rows(old_ms), now_ms)
    assert query(database, "SELECT device_id, glucose_mmol FROM telemetry_glucose") == [("gl-1", 5.5)]


def test_choose_mode_table() -> None:
    none, unloaded, ready = (
        TimescaleState(False, False, False),
        TimescaleState(True, False, False),
        TimescaleState(True, True, False),
    )
    assert choose_mode(none, "auto", None) == "partitioned"
    assert choose_mode(ready, "auto", None) == "timescaledb"
    assert choose_mode(ready, "partitions", None) == "partitioned"
    assert choose_mode(unloaded, "partitions", None) == "partitioned"
    assert choose_mode(ready, "timescaledb", "partitioned") == "partitioned"  # an existing database keeps its mode
    for state, engine, recorded in (
        (unloaded, "auto", None),
        (unloaded, "timescaledb", None),
        (unloaded, "auto", "timescaledb"),
    ):
        with pytest.raises(StorageSetupError, match="shared_preload_libraries = 'timescaledb'"):
            choose_mode(state, engine, recorded)
    with pytest.raises(StorageSetupError, match="Timescale's apt repository"):
        choose_mode(none, "timescaledb", None)


def test_a_server_that_cannot_hold_timescaledb_is_refused_before_any_change(postgres_server: LocalPostgres) -> None:
    """TimescaleDB mode: the same server tree without the preload; plain mode: asking for the extension."""
    timescale_tree = "shared_preload_libraries" in postgres_server.settings
    engine = "auto" if timescale_tree else "timescaledb"
    server = LocalPostgres(Path(tempfile.mkdtemp(prefix="eldercare-test-nopreload-")), fsync=False)
    server.bindir = postgres_server.bindir
    server.start()
    try:
        with pytest.raises(StorageSetupError, match="preload" if timescale_tree else "not installed"):
            upgrade(server.dsn, StoragePolicy(engine=engine))
        config = server.workdir / "config.yaml"
        config.write_text(yaml.safe_dump({"database": {"dsn": server.dsn}, "storage": {"engine": engine}}))
        cli = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "-c", str(config), "db", "upgrade"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cli.returncode == 2 and cli.stderr.startswith("storage error: TimescaleDB is "), cli.stderr
        assert "Traceback" not in cli.stderr
        assert query(server.dsn, "SELECT to_regclass('schema_migrations')") == [(None,)]
        assert upgrade(server.dsn, StoragePolicy(engine="partitions"))[:1] == [1]
        assert query(server.dsn, "SELECT mode FROM storage_mode") == [("partitioned",)]
    finally:
        server.stop("immediate")
