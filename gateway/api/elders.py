"""Elders, their devices, readings and the map: read-only views, scoped to the user.

Each view of elders' records (detail, readings, list, map) is written to the audit
log as it is served (``audit_log.record_read``).

List endpoints page (``limit``/``offset``) and count; the per-elder open-alert summary
is one grouped scan of the open alerts (a few thousand rows at most), not a query per
elder.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, timedelta
from typing import Any

from gateway.api.audit_log import record_read
from gateway.api.auth import Scope
from gateway.api.devices import devices, scope_named
from gateway.api.errors import not_found
from gateway.api.fence_shapes import bounds_of, feature_from_spec
from gateway.api.http import Call
from gateway.api.schemas import (
    ContactView,
    DeviceList,
    DeviceQuery,
    ElderDetail,
    ElderList,
    ElderQuery,
    ElderRow,
    FenceCollection,
    Latest,
    MapElder,
    MapQuery,
    MapView,
    Position,
    ReadingPoint,
    ReadingQuery,
    Readings,
)
from gateway.storage.rollup_reads import rollup_series

_OPEN = """
LEFT JOIN (SELECT elder_id, count(*) AS n,
                  min(CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END) AS rank
           FROM alerts WHERE state <> 'resolved' AND elder_id IS NOT NULL GROUP BY elder_id) o
  ON o.elder_id = e.elder_id
"""
_RANK_SEVERITY = {0: "critical", 1: "warning", 2: "info"}
_HOME = "(e.profile->'home'->>'lat')::float8, (e.profile->'home'->>'lon')::float8"

# metric -> (table, column, device type, aggregate per bucket)
METRICS: dict[str, tuple[str, str, str, str]] = {
    "hr": ("telemetry_wristband", "hr", "wristband", "avg"),
    "spo2": ("telemetry_wristband", "spo2", "wristband", "avg"),
    "steps": ("telemetry_wristband", "steps", "wristband", "max"),
    "battery": ("telemetry_wristband", "battery", "wristband", "avg"),
    "glucose_mmol": ("telemetry_glucose", "glucose_mmol", "glucose", "avg"),
    "systolic": ("telemetry_bp", "systolic", "bp", "avg"),
    "diastolic": ("telemetry_bp", "diastolic", "bp", "avg"),
}
RAW_RANGES: dict[str, tuple[timedelta, str]] = {"24h": (timedelta(hours=24), "5 minutes")}
# longer ranges read the hourly rollups (gateway/storage/rollups.py): hours, or days in ctx.timezone
ROLLUP_RANGES: dict[str, tuple[timedelta, str]] = {
    "7d": (timedelta(days=7), "hour"),
    "30d": (timedelta(days=30), "day"),
}


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _elders_where(call: Call, community: str | None, grid: str | None) -> tuple[list[str], list[Any]]:
    """The user's scope, narrowed by the community and grid asked for."""
    scope, params = Scope.elders(call.who)
    where, args = [scope], list(params)
    for column, value in (("e.community", community), ("e.grid", grid)):
        if value is not None:
            where.append(f"{column} = %s")
            args.append(value)
    return where, args


async def list_elders(call: Call) -> ElderList:
    q: ElderQuery = call.query
    where, args = _elders_where(call, q.community, q.grid)
    if q.q:
        where.append("(e.name ILIKE %s OR e.elder_id ILIKE %s)")
        args += [_like(q.q)] * 2
    clause = " AND ".join(where)
    async with call.ctx.pool.connection() as conn:
        cur = await conn.execute(
            f"SELECT e.elder_id, e.name, e.community, e.grid, {_HOME}, coalesce(o.n, 0), o.rank FROM elders e "
            f"{_OPEN} WHERE {clause} ORDER BY e.elder_id LIMIT %s OFFSET %s",
            (*args, q.limit, q.offset),
        )
        rows = await cur.fetchall()
        cur = await conn.execute(f"SELECT count(*) FROM elders e WHERE {clause}", tuple(args))
        total = await cur.fetchone()
    elders = [
        ElderRow(
            elder_id=i,
            name=n,
            community=c or None,
            grid=g or None,
            home=Position(lat=lat, lon=lon) if lat is not None and lon is not None else None,
            open_alerts=int(count),
            worst_severity=_RANK_SEVERITY.get(rank),  # type: ignore[arg-type]
        )
        for i, n, c, g, lat, lon, count, rank in rows
    ]
    await record_read(call, "read.elders", None, _shown(e.elder_id for e in elders))
    return ElderList(elders=elders, total=int(total[0]) if total else 0)


def _shown(elder_ids: Iterable[str], most: int = 500) -> dict[str, Any]:
    """Which elders a list showed (their homes), for the audit row; a long list is cut with its count."""
    ids = list(elder_ids)
    return {"elders": len(ids), "elder_ids": ids[:most]}


async def visible_elder(call: Call, elder_id: str) -> tuple[str, str | None, str | None, dict[str, Any]]:
    """name, community, grid, profile of an elder this user may see; 404 otherwise."""
    scope, params = Scope.elders(call.who)
    async with call.ctx.pool.connection() as conn:
        cur = await conn.execute(
            f"SELECT e.name, e.community, e.grid, e.profile FROM elders e WHERE e.elder_id = %s AND {scope}",
            (elder_id, *params),
        )
        row = await cur.fetchone()
    if row is None:
        raise not_found(f"elder {elder_id}")
    name, community, grid, profile = row
    return name, community or None, grid or None, profile


async def fences_of(call: Call, elder_ids: list[str]) -> FenceCollection:
    async with call.ctx.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT elder_id, spec FROM geofences WHERE elder_id = ANY(%s) ORDER BY elder_id, fence_id", (elder_ids,)
        )
        rows = await cur.fetchall()
    return FenceCollection(type="FeatureCollection", features=[feature_from_spec(e, s) for e, s in rows])


async def elder_detail(call: Call) -> ElderDetail:
    elder_id = call.path("elder_id")
    name, community, grid, profile = await visible_elder(call, elder_id)
    async with call.ctx.pool.connection() as conn:
        found, _ = await devices(
            conn, call.ctx.now(), "d.elder_id = %(elder)s", {"elder": elder_id}, low_pct=call.ctx.battery_low_pct
        )
        latest = await _latest(conn, elder_id, call)
    contacts = [
        ContactView(
            name=c.get("name", ""),
            phone=c.get("phone", ""),
            relation=c.get("relation", ""),
            language=c.get("language", "zh"),
            priority=int(c.get("priority", 1)),
            channels=list(c.get("channels", [])),
        )
        for c in profile.get("contacts", [])
    ]
    shown = {k: v for k, v in profile.items() if k not in ("id", "name", "community", "grid", "contacts")}
    await record_read(call, "read.elder", elder_id, {"parts": ["profile", "contacts", "devices", "latest", "fences"]})
    return ElderDetail(
        elder_id=elder_id,
        name=name,
        community=community,
        grid=grid,
        profile=shown,
        devices=found,
        contacts=contacts,
        fences=await fences_of(call, [elder_id]),
        latest=latest,
    )


async def _latest(conn: Any, elder_id: str, call: Call) -> Latest:
    since = call.ctx.now() - timedelta(days=7)
    values: dict[str, Any] = {}
    times = []
    for column, table, kind in (
        ("hr", "telemetry_wristband", "wristband"),
        ("spo2", "telemetry_wristband", "wristband"),
        ("battery", "telemetry_wristband", "wristband"),
        ("lat, lon", "telemetry_wristband", "wristband"),
        ("glucose_mmol", "telemetry_glucose", "glucose"),
        ("systolic, diastolic", "telemetry_bp", "bp"),
    ):
        first = column.split(",")[0]
        cur = await conn.execute(
            f"SELECT time, {column} FROM {table} WHERE device_id IN (SELECT device_id FROM devices "
            f"WHERE elder_id = %s AND device_type = %s) AND time > %s AND {first} IS NOT NULL "
            "ORDER BY time DESC LIMIT 1",
            (elder_id, kind, since),
        )
        row = await cur.fetchone()
        if row is None:
            continue
        times.append(row[0])
        for name, value in zip(column.split(", "), row[1:], strict=True):
            values[name] = float(value) if value is not None else None
    return Latest(
        hr=values.get("hr"),
        spo2=values.get("spo2"),
        glucose_mmol=values.get("glucose_mmol"),
        systolic=values.get("systolic"),
        diastolic=values.get("diastolic"),
        battery=values.get("battery"),
        lat=values.get("lat"),
        lon=values.get("lon"),
        time=max(times).astimezone(UTC) if times else None,
    )


async def readings(call: Call) -> Readings:
    elder_id = call.path("elder_id")
    await visible_elder(call, elder_id)
    q: ReadingQuery = call.query
    await record_read(call, "read.readings", elder_id, {"metric": q.metric, "range": q.range})
    if q.range in ROLLUP_RANGES:
        span, unit = ROLLUP_RANGES[q.range]
        async with call.ctx.pool.connection() as conn:
            found = await rollup_series(
                conn, elder_id, q.metric, unit, call.ctx.now() - span, call.ctx.now(), call.ctx.timezone
            )
        points = [ReadingPoint(time=b, value=v) for b, v in found]
        return Readings(metric=q.metric, range=q.range, points=points)
    table, column, kind, agg = METRICS[q.metric]
    span, bucket = RAW_RANGES[q.range]
    now = call.ctx.now()
    async with call.ctx.pool.connection() as conn:
        cur = await conn.execute(
            f"SELECT date_bin(%s::interval, t.time, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS b, "
            f"{agg}(t.{column})::float8 FROM {table} t WHERE t.device_id IN (SELECT device_id FROM devices "
            f"WHERE elder_id = %s AND device_type = %s) AND t.time > %s AND t.time <= %s "
            f"AND t.{column} IS NOT NULL GROUP BY b ORDER BY b",
            (bucket, elder_id, kind, now - span, now),
        )
        points = [ReadingPoint(time=b.astimezone(UTC), value=v) for b, v in await cur.fetchall()]
    return Readings(metric=q.metric, range=q.range, points=points)


async def list_devices(call: Call) -> DeviceList:
    q: DeviceQuery = call.query
    scope, params = scope_named(*Scope.elders(call.who))
    where = [scope]
    if q.elder_id is not None:
        where.append("d.elder_id = %(elder)s")
        params["elder"] = q.elder_id
    if q.type is not None:
        where.append("d.device_type = %(type)s")
        params["type"] = q.type
    async with call.ctx.pool.connection() as conn:
        found, total = await devices(
            conn, call.ctx.now(), " AND ".join(where), params, q.status, call.ctx.battery_low_pct, q.limit, q.offset
        )
    return DeviceList(devices=found, total=total)


async def elder_map(call: Call) -> MapView:
    q: MapQuery = call.query
    where, args = _elders_where(call, q.community, q.grid)
    clause = " AND ".join(where)
    async with call.ctx.pool.connection() as conn:
        cur = await conn.execute(
            f"SELECT e.elder_id, e.name, {_HOME}, e.grid, o.rank FROM elders e {_OPEN} "
            f"WHERE {clause} AND e.profile->'home' IS NOT NULL ORDER BY e.elder_id",
            tuple(args),
        )
        rows = await cur.fetchall()
        cur = await conn.execute(
            f"SELECT g.elder_id, g.spec FROM geofences g JOIN elders e USING (elder_id) "
            f"WHERE {clause} ORDER BY g.elder_id, g.fence_id",
            tuple(args),
        )
        fence_rows = await cur.fetchall()
    elders = [
        MapElder(elder_id=i, name=n, lat=lat, lon=lon, grid=g or None, worst_severity=_RANK_SEVERITY.get(rank))  # type: ignore[arg-type]
        for i, n, lat, lon, g, rank in rows
        if lat is not None and lon is not None
    ]
    features = [feature_from_spec(e, s) for e, s in fence_rows]
    await record_read(call, "read.map", None, _shown(e.elder_id for e in elders))
    boxes = [(m.lon, m.lat, m.lon, m.lat) for m in elders]
    boxes += [b for _, s in fence_rows if (b := bounds_of(s)) is not None]
    bounds = (
        [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]
        if boxes
        else None
    )
    return MapView(elders=elders, fences=FenceCollection(type="FeatureCollection", features=features), bounds=bounds)
