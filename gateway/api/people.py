"""Responders and roster overrides, as far as a user's area reaches.

A post station sees the responders of its community (its grid workers included: a
grid is (community, grid), and every community has its 网格1); a grid worker those of
its own grid and the other responders of its community; both see the hotline. Phone
numbers are shown only to the hotline and admins, who arrange cover; the others reach
colleagues through the escalation itself.
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
        return "(spec->>'role' = 'hotline' OR spec->>'community' = %s)", (user.community,)
    return (
        "(spec->>'role' = 'hotline' OR (spec->>'role' = 'grid_worker' AND spec->>'grid' = %s AND "
        "coalesce(spec->>'community', '') = %s) OR (spec->>'role' <> 'grid_worker' AND spec->>'community' = %s))",
        (user.grid, user.community or "", user.community or ""),
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
