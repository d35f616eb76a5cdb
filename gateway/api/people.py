"""Responders and roster overrides, as far as a user's area reaches.

A post station sees the responders of its community and of the grids its elders live
in; a grid worker those of its grid and of the communities its elders belong to; both
see the hotline. Phone numbers are shown only to the hotline and admins, who arrange
cover; the others reach colleagues through the escalation itself.
"""

from __future__ import annotations

from typing import Any

from gateway.api.auth import EVERYTHING, Principal
from gateway.api.http import Call
from gateway.api.schemas import ResponderList, ResponderView, RosterList, RosterOverrideView


def _visible(user: Principal) -> tuple[str, tuple[Any, ...]]:
    if user.role in EVERYTHING:
        return "true", ()
    if user.role == "post_station":
        return (
            "(spec->>'role' = 'hotline' OR spec->>'community' = %s OR spec->>'grid' IN "
            "(SELECT DISTINCT grid FROM elders WHERE community = %s AND grid <> ''))",
            (user.community,) * 2,
        )
    return (
        "(spec->>'role' = 'hotline' OR spec->>'grid' = %s OR spec->>'community' IN "
        "(SELECT DISTINCT community FROM elders WHERE grid = %s AND community <> ''))",
        (user.grid,) * 2,
    )


async def list_responders(call: Call) -> ResponderList:
    where, params = _visible(call.who)
    with_phone = call.who.role in EVERYTHING
    async with call.ctx.pool.connection() as conn:
        cur = await conn.execute(f"SELECT spec FROM responders WHERE {where} ORDER BY responder_id", params)
        rows = await cur.fetchall()
    return ResponderList(
        responders=[
            ResponderView(
                id=s["id"],
                name=s["name"],
                role=s["role"],
                language=s.get("language", "zh"),
                grid=s.get("grid"),
                community=s.get("community"),
                shifts=list(s.get("shifts", [])),
                channels=list(s.get("channels", [])),
                phone=s.get("phone") if with_phone else None,
            )
            for (s,) in rows
        ]
    )


async def list_rosters(call: Call) -> RosterList:
    where, params = _visible(call.who)
    async with call.ctx.pool.connection() as conn:
        cur = await conn.execute(
            f"SELECT o.spec FROM roster_overrides o WHERE o.spec->>'responder' IN "
            f"(SELECT responder_id FROM responders WHERE {where}) ORDER BY o.id",
            params,
        )
        rows = await cur.fetchall()
    return RosterList(
        overrides=[
            RosterOverrideView(
                responder=s["responder"], start=s["start"], end=s["end"], on_duty=bool(s.get("on_duty", True))
            )
            for (s,) in rows
        ]
    )
