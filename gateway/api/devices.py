"""Device status from the time-series tables: last seen, battery, online.

Nothing keeps a "current status" row per device; the latest rows of ``device_status``
and of the device's telemetry table (found through their ``(device_id, time)`` keys,
within the last week so partitions outside it are skipped) say it. A device is online
when it was heard within three reporting intervals and its own last status did not
say it went offline (the broker's will message).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection

from gateway.api.schemas import Device

LOOKBACK = timedelta(days=7)
SILENT_FACTOR = 3

_STATUS_SQL = """
SELECT * FROM (
  SELECT d.device_id, d.device_type, d.elder_id, d.reporting_interval_s, x.last_seen,
         CASE WHEN s.time IS NOT NULL AND (w.time IS NULL OR s.time >= w.time) AND s.battery IS NOT NULL
              THEN s.battery ELSE coalesce(w.battery, s.battery) END AS battery,
         x.last_seen IS NOT NULL
           AND x.last_seen > %(now)s - make_interval(secs => %(factor)s * d.reporting_interval_s)
           AND NOT (s.online IS FALSE AND s.time >= x.last_seen) AS online
  FROM devices d LEFT JOIN elders e ON e.elder_id = d.elder_id
  LEFT JOIN LATERAL (SELECT time, battery, online FROM device_status
                     WHERE device_id = d.device_id AND time > %(since)s ORDER BY time DESC LIMIT 1) s ON true
  LEFT JOIN LATERAL (SELECT time, battery FROM telemetry_wristband
                     WHERE d.device_type = 'wristband' AND device_id = d.device_id AND time > %(since)s
                     ORDER BY time DESC LIMIT 1) w ON true
  LEFT JOIN LATERAL (SELECT time FROM telemetry_glucose
                     WHERE d.device_type = 'glucose' AND device_id = d.device_id AND time > %(since)s
                     ORDER BY time DESC LIMIT 1) g ON true
  LEFT JOIN LATERAL (SELECT time FROM telemetry_bp
                     WHERE d.device_type = 'bp' AND device_id = d.device_id AND time > %(since)s
                     ORDER BY time DESC LIMIT 1) b ON true
  LEFT JOIN LATERAL (SELECT time FROM device_events
                     WHERE device_id = d.device_id AND time > %(since)s ORDER BY time DESC LIMIT 1) v ON true
  CROSS JOIN LATERAL (SELECT greatest(s.time, w.time, g.time, b.time, v.time) AS last_seen) x
  WHERE {where}
) devs WHERE {status}
"""


def status_filter(status: str | None, low_pct: float) -> tuple[str, dict[str, Any]]:
    if status == "online":
        return "online", {}
    if status == "silent":
        return "NOT online", {}
    if status == "low_battery":
        return "battery < %(low)s", {"low": low_pct}
    return "true", {}


async def devices(
    conn: AsyncConnection[Any],
    now: datetime,
    where: str,
    params: dict[str, Any],
    status: str | None = None,
    low_pct: float = 15.0,
    limit: int = 1000,
    offset: int = 0,
) -> tuple[list[Device], int]:
    """Devices matching ``where`` (over ``devices d`` and ``elders e``, named parameters), and how many."""
    extra, extra_params = status_filter(status, low_pct)
    sql = _STATUS_SQL.format(where=where, status=extra)
    args = {
        **params,
        **extra_params,
        "now": now,
        "since": now - LOOKBACK,
        "factor": SILENT_FACTOR,
        "limit": limit,
        "offset": offset,
    }
    cur = await conn.execute(sql + " ORDER BY device_id LIMIT %(limit)s OFFSET %(offset)s", args)
    rows = [_device(r) for r in await cur.fetchall()]
    if offset == 0 and len(rows) < limit:
        return rows, len(rows)
    counted = (
        f"SELECT count(*) FROM ({sql}) counted"
        if status
        # no status: no need to look at telemetry
        else f"SELECT count(*) FROM devices d LEFT JOIN elders e ON e.elder_id = d.elder_id WHERE {where}"
    )
    cur = await conn.execute(counted, args)
    row = await cur.fetchone()
    return rows, int(row[0]) if row else 0


def _device(row: Sequence[Any]) -> Device:
    device_id, device_type, elder_id, interval, last_seen, battery, online = row
    return Device(
        device_id=device_id,
        device_type=device_type,
        elder_id=elder_id,
        last_seen=last_seen.astimezone(UTC) if last_seen else None,
        battery=float(battery) if battery is not None else None,
        online=bool(online),
        reporting_interval_s=interval,
    )


def scope_named(predicate: str, params: tuple[Any, ...]) -> tuple[str, dict[str, Any]]:
    """A ``Scope`` predicate with ``%s`` placeholders rewritten to named ones."""
    named: dict[str, Any] = {}
    parts = predicate.split("%s")
    out = parts[0]
    for i, part in enumerate(parts[1:]):
        key = f"scope{i}"
        named[key] = params[i]
        out += f"%({key})s" + part
    return out, named
