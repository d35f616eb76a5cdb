"""Who read which elder's record, and the admin's view of the whole audit log.

Health readings and positions are sensitive personal information (PIPL Art. 28):
besides being shown only to the scopes that need them (``auth.Scope``), every read of
an elder's record by a person is written to ``audit_log`` - the elder detail (profile,
contacts, devices), readings, fences, an alert's detail (its GPS trail), the elder list
and map (homes) - with who, when, from which address, and what. Changes were already
written there (logins, fences, imports, ``eldercare users``), so one table answers
"who saw or changed what". ``GET /api/audit`` (admin only) queries it, newest first.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gateway.api.auth import audit
from gateway.api.http import Call
from gateway.api.request_checks import client_address
from gateway.api.schemas import AuditEntry, AuditList, AuditQuery


async def record_read(call: Call, action: str, target: str | None, detail: dict[str, Any] | None = None) -> None:
    """One ``read.*`` row for what this person has just been shown."""
    where = {"client": client_address(call.request, call.ctx.settings.trusted_proxies), **(detail or {})}
    async with call.ctx.pool.connection() as conn:
        await audit(conn, call.who.username, action, target, where, call.ctx.now())


async def list_audit(call: Call) -> AuditList:
    q: AuditQuery = call.query
    where: list[str] = ["true"]
    args: list[Any] = []
    if q.actor is not None:
        where.append("actor = %s")
        args.append(q.actor)
    if q.action is not None:
        if q.action.endswith("."):
            where.append("starts_with(action, %s)")
        else:
            where.append("action = %s")
        args.append(q.action)
    if q.target is not None:
        where.append("target = %s")
        args.append(q.target)
    if q.since is not None:
        where.append("at >= %s")
        args.append(q.since)
    if q.until is not None:
        where.append("at < %s")
        args.append(q.until)
    if q.before_id is not None:
        where.append("id < %s")
        args.append(q.before_id)
    async with call.ctx.pool.connection() as conn:
        cur = await conn.execute(
            f"SELECT id, at, actor, action, target, detail FROM audit_log WHERE {' AND '.join(where)} "
            "ORDER BY id DESC LIMIT %s",
            (*args, q.limit + 1),
        )
        rows = await cur.fetchall()
    entries = [
        AuditEntry(id=i, at=_utc(at), actor=actor, action=action, target=target, detail=detail)
        for i, at, actor, action, target, detail in rows[: q.limit]
    ]
    more = len(rows) > q.limit
    return AuditList(entries=entries, next_before_id=entries[-1].id if more and entries else None)


def _utc(at: datetime) -> datetime:
    return at.astimezone(UTC)
