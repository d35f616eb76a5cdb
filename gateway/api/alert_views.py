"""Alerts as the console sees them: one SELECT for summaries, shared by the list, the detail and the feed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection

from gateway.api.schemas import AlertSummary, Position

# a position: where the detection happened (a geofence fix), else the elder's home
SUMMARY_SELECT = """
SELECT a.alert_id, a.code, a.elder_id, e.name, a.device_id, a.kind, a.severity, a.state,
       coalesce(a.community, e.community), coalesce(a.grid, e.grid), a.opened_at, a.acknowledged_at,
       a.acknowledged_by, a.on_scene_at, a.resolved_at, a.outcome,
       CASE WHEN jsonb_typeof(a.evidence->'lat') = 'number' AND jsonb_typeof(a.evidence->'lon') = 'number'
            THEN (a.evidence->>'lat')::float8 ELSE (e.profile->'home'->>'lat')::float8 END,
       CASE WHEN jsonb_typeof(a.evidence->'lat') = 'number' AND jsonb_typeof(a.evidence->'lon') = 'number'
            THEN (a.evidence->>'lon')::float8 ELSE (e.profile->'home'->>'lon')::float8 END
FROM alerts a LEFT JOIN elders e ON e.elder_id = a.elder_id
"""

SEVERITY_RANK = "CASE a.severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END"


def utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def summary(row: Sequence[Any]) -> AlertSummary:
    (
        alert_id,
        code,
        elder_id,
        name,
        device_id,
        kind,
        severity,
        state,
        community,
        grid,
        opened,
        acked,
        acked_by,
        on_scene,
        resolved,
        outcome,
        lat,
        lon,
    ) = row[:18]
    return AlertSummary(
        alert_id=alert_id,
        code=code,
        elder_id=elder_id,
        elder_name=name,
        device_id=device_id,
        kind=kind,
        severity=severity,
        state=state,
        community=community,
        grid=grid,
        opened_at=opened.astimezone(UTC),
        acknowledged_at=utc(acked),
        acknowledged_by=acked_by,
        on_scene_at=utc(on_scene),
        resolved_at=utc(resolved),
        outcome=outcome,
        position=Position(lat=lat, lon=lon) if lat is not None and lon is not None else None,
    )


async def summaries(
    conn: AsyncConnection[Any], where: str, params: Sequence[Any], tail: str = ""
) -> list[AlertSummary]:
    cur = await conn.execute(f"{SUMMARY_SELECT} WHERE {where} {tail}", tuple(params))
    return [summary(r) for r in await cur.fetchall()]
