"""Hourly rollups of vitals and activity, for the console's 7- and 30-day charts and the monthly report.

One rollup per source table, holding per device and UTC hour the sums and counts (so any
coarser bucket averages exactly) and the highest step count. The same name answers in
both storage modes:

- TimescaleDB: a real-time continuous aggregate (``materialized_only = false``) with a
  refresh policy that re-reads the window readings may still arrive in.
- Partitions: a table ``<name>_m`` the gateway refreshes (``refresh``), and a view
  ``<name>`` = the table below the watermark + the raw readings above it, computed
  alike. Readings stored below the watermark later (a device's backlog, the spool)
  are recorded by the writer in ``rollup_invalidations`` and re-aggregated next refresh.

Daily figures come from the hourly rows at read time (``date_trunc('day', bucket, tz)``),
in the elder's time zone: at most 24 x 31 rows per device and month.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg

from gateway.storage.policy import StoragePolicy
from gateway.storage.tables import BLOOD_PRESSURE, GLUCOSE, WRISTBAND, TableSpec

log = logging.getLogger(__name__)

ROLLUP_LOCK = 7_311_002  # advisory lock key: one plain-rollup refresh at a time
# A refresh aggregates up to the hour before (now - LATE_MS); the writer records any row
# older than LATE_MS as an invalidation, so a row committed after a refresh read its hour
# is always either above the watermark or recorded.
LATE_MS = 300_000


@dataclass(frozen=True, slots=True)
class Measure:
    name: str
    expression: str  # over the source table's columns
    sql_type: str


@dataclass(frozen=True, slots=True)
class RollupSpec:
    name: str
    source: TableSpec
    measures: tuple[Measure, ...]


def _avg_parts(column: str) -> tuple[Measure, Measure]:
    return (
        Measure(f"{column}_sum", f"sum({column}::float8)", "double precision"),
        Measure(f"{column}_n", f"count({column})", "bigint"),
    )


WRISTBAND_HOURLY = RollupSpec(
    "wristband_hourly",
    WRISTBAND,
    (*_avg_parts("hr"), *_avg_parts("spo2"), *_avg_parts("battery"), Measure("steps_max", "max(steps)", "integer")),
)
GLUCOSE_HOURLY = RollupSpec("glucose_hourly", GLUCOSE, _avg_parts("glucose_mmol"))
BP_HOURLY = RollupSpec("bp_hourly", BLOOD_PRESSURE, (*_avg_parts("systolic"), *_avg_parts("diastolic")))
ROLLUPS: tuple[RollupSpec, ...] = (WRISTBAND_HOURLY, GLUCOSE_HOURLY, BP_HOURLY)
BY_SOURCE: dict[str, RollupSpec] = {r.source.name: r for r in ROLLUPS}


@dataclass(frozen=True, slots=True)
class Metric:
    """A charted value: which rollup holds it and how buckets combine (``avg`` of sums/counts, or ``max``)."""

    rollup: RollupSpec
    column: str
    combine: str

    def value_sql(self) -> str:
        if self.combine == "max":
            return f"max(r.{self.column}_max)::float8"
        return f"(sum(r.{self.column}_sum) / nullif(sum(r.{self.column}_n), 0))::float8"

    def present_sql(self) -> str:
        return f"r.{self.column}_max IS NOT NULL" if self.combine == "max" else f"r.{self.column}_n > 0"


METRICS: dict[str, Metric] = {
    "hr": Metric(WRISTBAND_HOURLY, "hr", "avg"),
    "spo2": Metric(WRISTBAND_HOURLY, "spo2", "avg"),
    "steps": Metric(WRISTBAND_HOURLY, "steps", "max"),
    "battery": Metric(WRISTBAND_HOURLY, "battery", "avg"),
    "glucose_mmol": Metric(GLUCOSE_HOURLY, "glucose_mmol", "avg"),
    "systolic": Metric(BP_HOURLY, "systolic", "avg"),
    "diastolic": Metric(BP_HOURLY, "diastolic", "avg"),
}

_HOUR = "date_bin(interval '1 hour', time, TIMESTAMPTZ '2000-01-01 00:00:00+00')"


def _select(spec: RollupSpec, bucket: str, where: str = "") -> str:
    measures = ", ".join(f"{m.expression} AS {m.name}" for m in spec.measures)
    return f"SELECT {bucket} AS bucket, device_id, {measures} FROM {spec.source.name} {where} GROUP BY 1, 2"


def create(conn: psycopg.Connection[tuple[object, ...]], mode: str, policy: StoragePolicy) -> None:
    """Create every rollup for ``mode`` (``timescaledb`` or ``partitioned``); run in a migration."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS rollup_invalidations (id bigserial PRIMARY KEY, source text NOT NULL, "
        "from_time timestamptz NOT NULL, to_time timestamptz NOT NULL)"
    )
    for spec in ROLLUPS:
        if mode == "timescaledb":
            conn.execute(
                f"CREATE MATERIALIZED VIEW {spec.name} WITH (timescaledb.continuous, "
                "timescaledb.materialized_only = false) AS "
                + _select(spec, "time_bucket(interval '1 hour', time)")
                + " WITH NO DATA"
            )
            conn.execute(
                "SELECT add_continuous_aggregate_policy(%s, start_offset => make_interval(days => %s), "
                "end_offset => interval '1 hour', schedule_interval => interval '30 minutes')",
                (spec.name, policy.past_days + 1),
            )
        else:
            columns = ", ".join(f"{m.name} {m.sql_type}" for m in spec.measures)
            conn.execute(
                f"CREATE TABLE {spec.name}_m (bucket timestamptz NOT NULL, device_id text NOT NULL, "
                f"{columns}, PRIMARY KEY (device_id, bucket))"
            )
            conn.execute("CREATE TABLE IF NOT EXISTS rollup_watermarks (rollup text PRIMARY KEY, upto timestamptz)")
            conn.execute("INSERT INTO rollup_watermarks (rollup) VALUES (%s)", (spec.name,))
            mark = f"coalesce((SELECT upto FROM rollup_watermarks WHERE rollup = '{spec.name}'), '-infinity')"
            conn.execute(
                f"CREATE VIEW {spec.name} AS SELECT * FROM {spec.name}_m WHERE bucket < {mark} "
                f"UNION ALL " + _select(spec, _HOUR, f"WHERE time >= {mark}")
            )


def hour_floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _aggregate(
    conn: psycopg.Connection[tuple[object, ...]], spec: RollupSpec, start: datetime | None, end: datetime
) -> None:
    """Recompute the hours in [start, end) (start None: from the first reading) from the raw table."""
    low = "time >= %(start)s AND " if start is not None else ""
    conn.execute(
        f"DELETE FROM {spec.name}_m WHERE {low.replace('time', 'bucket')}bucket < %(end)s", {"start": start, "end": end}
    )
    conn.execute(
        f"INSERT INTO {spec.name}_m " + _select(spec, _HOUR, f"WHERE {low}time < %(end)s"),
        {"start": start, "end": end},
    )


def refresh(conn: psycopg.Connection[tuple[object, ...]], mode: str, now: datetime) -> int:
    """Bring every rollup up to the last whole hour before ``now``; return the ranges re-aggregated.

    Under TimescaleDB this refreshes the continuous aggregates (what their policy does on
    its own schedule); ``conn`` must then be in autocommit mode.
    """
    upto = hour_floor(now - timedelta(milliseconds=LATE_MS))
    if mode == "timescaledb":
        conn.execute("DELETE FROM rollup_invalidations")  # the extension keeps its own log
        for spec in ROLLUPS:
            conn.execute("CALL refresh_continuous_aggregate(%s, NULL, %s)", (spec.name, upto))
        return len(ROLLUPS)
    done = 0
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (ROLLUP_LOCK,))
        for spec in ROLLUPS:
            row = conn.execute(
                "SELECT upto FROM rollup_watermarks WHERE rollup = %s FOR UPDATE", (spec.name,)
            ).fetchone()
            mark: datetime | None = row[0] if row else None  # type: ignore[assignment]
            ranges: list[tuple[datetime | None, datetime]] = []
            if mark is None or mark < upto:
                ranges.append((mark, upto))
            late = conn.execute(
                "DELETE FROM rollup_invalidations WHERE source = %s RETURNING from_time, to_time", (spec.source.name,)
            ).fetchall()
            for low, high in late:
                assert isinstance(low, datetime) and isinstance(high, datetime)
                if mark is not None and low < mark:
                    ranges.append((hour_floor(low), min(hour_floor(high) + timedelta(hours=1), mark)))
            for start, end in ranges:
                _aggregate(conn, spec, start, end)
            conn.execute("UPDATE rollup_watermarks SET upto = greatest(upto, %s) WHERE rollup = %s", (upto, spec.name))
            conn.execute("UPDATE rollup_watermarks SET upto = %s WHERE rollup = %s AND upto IS NULL", (upto, spec.name))
            done += len(ranges)
    return done
