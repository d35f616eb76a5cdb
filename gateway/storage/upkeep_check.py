"""Did storage upkeep do its work? Judged by the outcome, not by job status.

With TimescaleDB 2.28.3 on PostgreSQL 15.20 every scheduler-run job is recorded as
``Failed`` although its work is done, so ``job_stats`` says nothing useful; and a
policy that really stopped would show there no differently. What matters is the data:
chunks past ``compress_after_days`` still uncompressed, or past ``retention_days``
still present (a day of grace for the job's schedule). The plain path checks its own
partitions the same way. The gateway shows the counts in /metrics and /readyz.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from gateway.storage.partitions import partition_day, partitions_of, storage_mode
from gateway.storage.policy import StoragePolicy
from gateway.storage.tables import TIME_SERIES

GRACE = timedelta(days=1)  # the policies run every 12 h (compression) and 24 h (retention)


@dataclass(frozen=True, slots=True)
class UpkeepOutcome:
    uncompressed_overdue: int  # chunks older than compress_after_days + GRACE not compressed
    expired_present: int  # chunks or partitions older than retention_days + GRACE still there

    def warnings(self) -> list[str]:
        found = []
        if self.uncompressed_overdue:
            found.append(f"{self.uncompressed_overdue} chunks past compress_after_days are not compressed")
        if self.expired_present:
            found.append(f"{self.expired_present} chunks past retention_days are still stored")
        return found


def check_upkeep(conn: psycopg.Connection[tuple[object, ...]], policy: StoragePolicy, now: datetime) -> UpkeepOutcome:
    names = [t.name for t in TIME_SERIES]
    compress_before = now - timedelta(days=policy.compress_after_days) - GRACE
    expire_before = now - timedelta(days=policy.retention_days) - GRACE
    if storage_mode(conn) == "timescaledb":
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE NOT is_compressed AND range_end < %s), "
            "count(*) FILTER (WHERE range_end < %s) "
            "FROM timescaledb_information.chunks WHERE hypertable_name = ANY(%s)",
            (compress_before, expire_before, names),
        ).fetchone()
        assert row is not None
        return UpkeepOutcome(int(str(row[0])), int(str(row[1])))
    last_expired_day = expire_before.date() - timedelta(days=1)  # a partition ends the day after it starts
    expired = 0
    for name in partitions_of(conn):
        for table in names:
            day = partition_day(table, name)
            if day is not None and day <= last_expired_day:
                expired += 1
    return UpkeepOutcome(0, expired)
