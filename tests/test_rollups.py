"""Hourly rollups: the 7- and 30-day charts and the monthly vitals report give the same numbers
in both storage modes, before and after a refresh, and after a late reading is re-aggregated.

Two databases get the same readings: one in the server's own mode (TimescaleDB under
``make test-timescaledb``) and one with ``engine: partitions``; both are also checked
against the figures computed here from the raw readings.
"""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from gateway.alerting.vitals_report import vitals
from gateway.pipeline.batch import DecodedBatch, TableRows
from gateway.storage import rollups, tables
from gateway.storage.binary_copy import Column
from gateway.storage.rollup_reads import rollup_series
from gateway.storage.schema import StoragePolicy, storage_mode, upgrade
from gateway.storage.writer import TelemetryWriter
from tests.support import query

TZ = "Asia/Shanghai"
NOW = datetime.now(UTC).replace(second=0, microsecond=0)
Reading = tuple[datetime, float, int]  # time, hr, steps


@pytest.fixture
def plain_database(database: str) -> Iterator[str]:
    """A second database on the same server, forced to plain partitions."""
    admin = database.rsplit("/", 1)[0] + "/postgres"
    name = database.rsplit("/", 1)[1] + "_plain"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield database.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _readings() -> list[Reading]:
    """Every 10 minutes for 35 days: heart rate cycling, steps counting up through each local day."""
    out: list[Reading] = []
    start = NOW.replace(minute=NOW.minute - NOW.minute % 10) - timedelta(days=35)
    for i in range(35 * 144):
        at = start + timedelta(minutes=10 * i)
        local = at.astimezone(ZoneInfo(TZ))
        out.append((at, float(55 + (i * 7) % 41), local.hour * 100 + local.minute))
    return out


def _seed(dsn: str, engine: str, readings: list[Reading]) -> None:
    upgrade(dsn, StoragePolicy(past_days=40, engine=engine))  # type: ignore[arg-type]
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO elders (elder_id, name) VALUES ('e1', '王秀英')")
        conn.execute(
            "INSERT INTO devices (device_id, device_type, elder_id) VALUES "
            "('wb-1', 'wristband', 'e1'), ('gl-1', 'glucose', 'e1'), ('bp-1', 'bp', 'e1')"
        )
        with conn.cursor().copy("COPY telemetry_wristband (time, device_id, hr, spo2, steps) FROM STDIN") as copy:
            for at, hr, steps in readings:
                copy.write_row((at, "wb-1", hr, 97, steps))
        for day in range(35):
            at = NOW - timedelta(days=day, hours=3)
            conn.execute("INSERT INTO telemetry_glucose VALUES (%s, 'gl-1', %s, 'fasting')", (at, 5 + day % 4 * 0.5))
            conn.execute("INSERT INTO telemetry_bp VALUES (%s, 'bp-1', %s, %s, 70, false)", (at, 120 + day % 9, 80))


def _refresh(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rollups.refresh(conn, storage_mode(conn), NOW)


def _materialized_hours(dsn: str) -> int:
    """Rows the wristband rollup holds materialized (its table, or the aggregate's own hypertable)."""
    with psycopg.connect(dsn) as conn:
        if storage_mode(conn) == "partitioned":
            return int(str(conn.execute("SELECT count(*) FROM wristband_hourly_m").fetchone()[0]))  # type: ignore[index]
        row = conn.execute(
            "SELECT format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name) "
            "FROM timescaledb_information.continuous_aggregates WHERE view_name = 'wristband_hourly'"
        ).fetchone()
        assert row is not None
        return int(str(conn.execute(f"SELECT count(*) FROM {row[0]}").fetchone()[0]))  # type: ignore[index]


def _figures(dsn: str) -> dict[str, object]:
    async def charts() -> dict[str, object]:
        async with AsyncConnectionPool(dsn, min_size=1, max_size=1) as pool, pool.connection() as conn:
            out: dict[str, object] = {}
            for metric in ("hr", "steps", "glucose_mmol", "systolic"):
                out[f"{metric} 7d"] = await rollup_series(conn, "e1", metric, "hour", NOW - timedelta(days=7), NOW, TZ)
                out[f"{metric} 30d"] = await rollup_series(conn, "e1", metric, "day", NOW - timedelta(days=30), NOW, TZ)
            return out

    figures = asyncio.run(charts())
    months = {(NOW - timedelta(days=d)).astimezone(ZoneInfo(TZ)).strftime("%Y-%m") for d in (0, 20)}
    with psycopg.connect(dsn) as conn:
        for month in sorted(months):
            figures[f"vitals {month}"] = vitals(conn, month, TZ)
    return figures


def _same(a: object, b: object) -> bool:
    """Equal, floats to 1e-9 relative (the two engines may add a bucket's readings in another order)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if hasattr(a, "__slots__") and type(a) is type(b):
        return all(_same(getattr(a, f), getattr(b, f)) for f in a.__slots__)
    return a == b


def _expected_hourly_hr(readings: list[Reading]) -> list[tuple[datetime, float]]:
    first = (NOW - timedelta(days=7)).replace(minute=0)
    hours: dict[datetime, list[float]] = defaultdict(list)
    for at, hr, _ in readings:
        hour = at.replace(minute=0)
        if first <= hour <= NOW:
            hours[hour].append(hr)
    return [(h, sum(v) / len(v)) for h, v in sorted(hours.items())]


def _expected_daily_steps(readings: list[Reading]) -> list[tuple[datetime, float]]:
    zone = ZoneInfo(TZ)
    first = (NOW - timedelta(days=30)).astimezone(zone).replace(hour=0, minute=0)
    days: dict[datetime, int] = {}
    for at, _, steps in readings:
        day = at.astimezone(zone).replace(hour=0, minute=0)
        if day >= first:
            days[day] = max(days.get(day, 0), steps)
    return [(d.astimezone(UTC), float(s)) for d, s in sorted(days.items())]


def _late_reading(dsn: str, at: datetime, hr: float) -> None:
    ms = int(at.timestamp() * 1000)
    kinds = [c.kind for c in tables.WRISTBAND.columns]
    values: list[object] = [ms, b"wb-1", 31.2, 121.4, 5.0, hr, 97.0, 1, 80.0, True]
    dtypes = {"timestamptz_ms": np.int64, "float8": np.float64, "float4": np.float32, "int4": np.int32}
    columns = tuple(
        Column(kind, np.array([value], dtype=object if kind == "text" else dtypes.get(kind, np.bool_)))
        for kind, value in zip(kinds, values, strict=True)
    )

    async def write() -> None:
        async with AsyncConnectionPool(dsn, min_size=1, max_size=1) as pool:
            await TelemetryWriter(pool).write(
                DecodedBatch(tables=[TableRows(tables.WRISTBAND, columns)], received_ms=ms)
            )

    asyncio.run(write())


def test_charts_and_report_read_the_rollups_alike_in_both_modes(
    database: str, plain_database: str, storage_mode: str
) -> None:
    readings = _readings()
    _seed(database, "auto", readings)
    _seed(plain_database, "partitions", readings)
    assert query(database, "SELECT mode FROM storage_mode") == [(storage_mode,)]
    assert query(plain_database, "SELECT mode FROM storage_mode") == [("partitioned",)]

    before = _figures(database)  # nothing materialized yet: the raw readings answer
    assert _same(before, _figures(plain_database))
    assert _same(before["hr 7d"], _expected_hourly_hr(readings))
    assert _same(before["steps 30d"], _expected_daily_steps(readings))
    assert len(before["glucose_mmol 30d"]) in (30, 31)  # type: ignore[arg-type]
    report = next(iter(v for k, v in before.items() if k.startswith("vitals")))
    assert report[0].elder_id == "e1" and report[0].days > 0 and report[0].systolic is not None  # type: ignore[index]

    for dsn in (database, plain_database):
        _refresh(dsn)
    assert _materialized_hours(plain_database) > 24 * 30 and _materialized_hours(database) > 24 * 30
    after = _figures(database)
    assert _same(after, before) and _same(_figures(plain_database), before)

    late = (NOW - timedelta(days=3)).replace(minute=5)  # an hour both rollups have materialized
    for dsn in (database, plain_database):
        _late_reading(dsn, late, 250.0)
    assert query(plain_database, "SELECT count(*) FROM rollup_invalidations") == [(1,)]
    for dsn in (database, plain_database):
        _refresh(dsn)
    readings.append((late, 250.0, 1))
    final = _figures(database)
    assert _same(final, _figures(plain_database))
    assert _same(final["hr 7d"], _expected_hourly_hr(readings))
    assert not _same(final["hr 7d"], before["hr 7d"])
