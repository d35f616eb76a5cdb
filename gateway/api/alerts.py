"""Alert endpoints: list, detail with the whole story, and what a person does to an alert.

Acknowledging, arriving, resolving and notes go through ``AlertEngine`` exactly as an
SMS reply or a key press does, so the elder's band hears "help is coming", the others
paged hear who took it, and ``alert_events`` records the user (their display name,
unique per user) with channel ``console``.
"""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

from gateway.alerting.actions import AlertError
from gateway.api.alert_views import SEVERITY_RANK, summaries
from gateway.api.audit_log import record_read
from gateway.api.auth import Scope
from gateway.api.errors import ApiError, not_found
from gateway.api.http import Call
from gateway.api.schemas import (
    AckBody,
    AlertDetail,
    AlertList,
    AlertQuery,
    AlertSummary,
    DetectionView,
    NoteBody,
    NotificationView,
    ResolveBody,
    TimelineEntry,
    TrailPoint,
)

TRAIL_BEFORE = timedelta(minutes=30)
TRAIL_MAX_POINTS = 2000


async def list_alerts(call: Call) -> AlertList:
    q: AlertQuery = call.query
    scope, params = Scope.alerts(call.who)
    where, args = [scope], list(params)
    if q.state == "open":
        where.append("a.state <> 'resolved'")
    elif q.state == "resolved":
        where.append("a.state = 'resolved'")
    for column, value in (
        ("a.severity", q.severity),
        ("a.kind", q.kind),
        ("a.elder_id", q.elder_id),
        ("coalesce(a.community, e.community)", q.community),
        ("coalesce(a.grid, e.grid)", q.grid),
    ):
        if value is not None:
            where.append(f"{column} = %s")
            args.append(value)
    if q.before_id is not None:
        where.append("a.alert_id < %s")
        args.append(q.before_id)
    clause = " AND ".join(where)
    order = f"ORDER BY {SEVERITY_RANK}, a.opened_at, a.alert_id" if q.state == "open" else "ORDER BY a.alert_id DESC"
    async with call.ctx.pool.connection() as conn:
        alerts = await summaries(conn, clause, [*args, q.limit, q.offset], f"{order} LIMIT %s OFFSET %s")
        cur = await conn.execute(
            f"SELECT count(*) FROM alerts a LEFT JOIN elders e ON e.elder_id = a.elder_id WHERE {clause}", tuple(args)
        )
        row = await cur.fetchone()
    more = q.state != "open" and len(alerts) == q.limit
    return AlertList(
        alerts=alerts, total=int(row[0]) if row else 0, next_before_id=alerts[-1].alert_id if more else None
    )


async def visible(call: Call, alert_id: int) -> AlertSummary:
    """The alert if this user may see it; 404 otherwise (out of scope looks like unknown)."""
    scope, params = Scope.alerts(call.who)
    async with call.ctx.pool.connection() as conn:
        found = await summaries(conn, f"a.alert_id = %s AND {scope}", [alert_id, *params])
    if not found:
        raise not_found(f"alert {alert_id}")
    return found[0]


async def alert_detail(call: Call) -> AlertDetail:
    alert = await visible(call, call.path("alert_id"))
    async with call.ctx.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT at, event, actor, channel, detail FROM alert_events WHERE alert_id = %s ORDER BY at, id",
            (alert.alert_id,),
        )
        timeline = [
            TimelineEntry(at=at.astimezone(UTC), event=event, actor=actor, channel=channel, detail=_public(detail))
            for at, event, actor, channel, detail in await cur.fetchall()
        ]
        cur = await conn.execute(
            "SELECT created_at, recipient_name, role, channel, purpose, tier, status FROM notifications "
            "WHERE alert_id = %s ORDER BY id",
            (alert.alert_id,),
        )
        notifications = [
            NotificationView(
                at=at.astimezone(UTC),
                recipient_name=name,
                role=role,
                channel=channel,
                purpose=purpose,
                tier=tier,
                status=status,
            )
            for at, name, role, channel, purpose, tier, status in await cur.fetchall()
        ]
        cur = await conn.execute(
            "SELECT id, ts, kind, severity, device_id, cleared, evidence FROM detections WHERE alert_id = %s "
            "ORDER BY id",
            (alert.alert_id,),
        )
        detections = [
            DetectionView(
                id=i,
                time=ts.astimezone(UTC),
                kind=kind,
                severity=severity,
                device_id=device,
                cleared=cleared,
                evidence=evidence,
            )
            for i, ts, kind, severity, device, cleared, evidence in await cur.fetchall()
        ]
        until = alert.resolved_at or call.ctx.now()
        cur = await conn.execute(
            "SELECT w.time, w.lat, w.lon, w.gps_acc_m FROM telemetry_wristband w WHERE w.device_id IN ("
            "  SELECT device_id FROM devices WHERE device_type = 'wristband' AND elder_id = %s"
            "  UNION SELECT %s) AND w.time >= %s AND w.time <= %s AND w.lat IS NOT NULL AND w.lon IS NOT NULL "
            "ORDER BY w.time LIMIT %s",
            (alert.elder_id, alert.device_id, alert.opened_at - TRAIL_BEFORE, until, TRAIL_MAX_POINTS),
        )
        trail = [
            TrailPoint(time=t.astimezone(UTC), lat=lat, lon=lon, gps_acc_m=acc)
            for t, lat, lon, acc in await cur.fetchall()
        ]
    fields = {name: getattr(alert, name) for name in AlertSummary.__struct_fields__}
    await record_read(
        call,
        "read.alert",
        alert.elder_id or f"alert:{alert.alert_id}",
        {"alert_id": alert.alert_id, "trail_points": len(trail), "detections": len(detections)},
    )
    detail = AlertDetail(**fields, timeline=timeline, notifications=notifications, detections=detections, trail=trail)
    return detail


def _public(detail: dict[str, Any]) -> dict[str, Any]:
    """Audit details as shown to people: never a phone number (they stay in the outbox)."""
    return {k: v for k, v in detail.items() if "phone" not in k}


async def acknowledge(call: Call) -> AlertSummary:
    alert = await visible(call, call.path("alert_id"))
    body: AckBody = call.body
    user = call.who
    try:
        row = await call.ctx.engine.acknowledge(
            alert.alert_id,
            user.actor,
            "console",
            eta_s=body.eta_min * 60 if body.eta_min is not None else None,
            note=body.note,
        )
    except AlertError as error:
        raise ApiError(409, "conflict", f"{error}.") from None
    if row.acknowledged_by != user.actor:
        raise ApiError(409, "already_taken", f"{row.acknowledged_by} has already taken {row.code}.")
    return await visible(call, alert.alert_id)


async def on_scene(call: Call) -> AlertSummary:
    alert = await visible(call, call.path("alert_id"))
    try:
        await call.ctx.engine.on_scene(alert.alert_id, call.who.actor, "console")
    except AlertError as error:
        raise ApiError(409, "conflict", f"{error}.") from None
    return await visible(call, alert.alert_id)


async def resolve(call: Call) -> AlertSummary:
    alert = await visible(call, call.path("alert_id"))
    body: ResolveBody = call.body
    try:
        await call.ctx.engine.resolve(alert.alert_id, call.who.actor, "console", body.outcome, note=body.note)
    except AlertError as error:
        raise ApiError(409, "conflict", f"{error}.") from None
    return await visible(call, alert.alert_id)


async def add_note(call: Call) -> None:
    alert = await visible(call, call.path("alert_id"))
    body: NoteBody = call.body
    if not body.text.strip():
        raise ApiError(422, "invalid_body", "A note needs some text.")
    await call.ctx.engine.add_note(alert.alert_id, call.who.actor, "console", body.text.strip())
