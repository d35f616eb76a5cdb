"""Reading the hourly rollups: one query shape for the charts and the monthly report, in either mode.

The rollup names answer alike under TimescaleDB (real-time continuous aggregates) and
plain partitions (table + view), so nothing here asks which mode it runs in. Averages
are sums over counts, so an hour, a day or a month averages every reading exactly once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gateway.storage.rollups import METRICS

_DEVICE_TYPE = {"wristband_hourly": "wristband", "glucose_hourly": "glucose", "bp_hourly": "bp"}


async def rollup_series(
    conn: Any, elder_id: str, metric: str, unit: str, start: datetime, end: datetime, timezone: str
) -> list[tuple[datetime, float]]:
    """(bucket start, value) per ``unit`` (``hour`` or ``day`` in ``timezone``) of the elder's devices."""
    spec = METRICS[metric]
    cur = await conn.execute(
        f"SELECT date_trunc(%(unit)s, r.bucket, %(tz)s) AS b, {spec.value_sql()} "
        f"FROM {spec.rollup.name} r WHERE r.device_id IN (SELECT device_id FROM devices "
        "WHERE elder_id = %(elder)s AND device_type = %(type)s) "
        "AND r.bucket >= date_trunc(%(unit)s, %(start)s::timestamptz, %(tz)s) AND r.bucket <= %(end)s "
        f"AND {spec.present_sql()} GROUP BY b ORDER BY b",
        {
            "unit": unit,
            "tz": timezone,
            "elder": elder_id,
            "type": _DEVICE_TYPE[spec.rollup.name],
            "start": start,
            "end": end,
        },
    )
    return [(b.astimezone(UTC), float(v)) for b, v in await cur.fetchall()]
