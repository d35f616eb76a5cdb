"""The live alert stream's endpoint: backlog since ``Last-Event-ID``, then the feed (see events.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator

import msgspec
from starlette.responses import StreamingResponse

from gateway.api.alert_views import summaries
from gateway.api.auth import Scope
from gateway.api.events import BACKLOG_MAX, SESSION_CHECK_S
from gateway.api.http import Call
from gateway.api.schemas import AlertSummary, EventsQuery

log = logging.getLogger("gateway.api.events")


async def backlog(call: Call, after: int) -> list[tuple[int, AlertSummary]]:
    """What changed since ``after`` (a Last-Event-ID), for this user, oldest change first."""
    scope, params = Scope.alerts(call.who)
    async with call.ctx.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT alert_id, max(id) AS last FROM alert_events WHERE id > %s GROUP BY alert_id "
            "ORDER BY last DESC LIMIT %s",
            (after, BACKLOG_MAX),
        )
        latest = {a: i for a, i in await cur.fetchall()}
        if not latest:
            return []
        found = await summaries(conn, f"a.alert_id = ANY(%s) AND {scope}", [list(latest), *params])
    return sorted(((latest[a.alert_id], a) for a in found), key=lambda pair: pair[0])


_LOGOUT = b'event: logout\ndata: {"error": "session_expired"}\n\n'


def _frame(event_id: int, alert: AlertSummary) -> bytes:
    return b"event: alert\nid: %d\ndata: %s\n\n" % (event_id, msgspec.json.encode(alert))


async def alert_events(call: Call) -> StreamingResponse:
    q: EventsQuery = call.query
    header = call.request.headers.get("last-event-id", "").strip()
    after = int(header) if header.isdigit() else q.last_event_id
    ctx, user = call.ctx, call.who
    sub = ctx.feed.subscribe(user)
    try:
        missed = await backlog(call, after) if after is not None else []
    except BaseException:
        ctx.feed.unsubscribe(sub)
        raise

    async def stream() -> AsyncIterator[bytes]:
        sent: deque[int] = deque(maxlen=10_000)
        loop = asyncio.get_running_loop()
        checked = loop.time()

        async def session_ended(force: bool = False) -> bool:
            """Before any frame: ended here (at once), or elsewhere (read at most every SESSION_CHECK_S)."""
            nonlocal checked
            if sub.ended.is_set():
                return True
            if force or loop.time() - checked >= SESSION_CHECK_S:
                checked = loop.time()
                return not await ctx.auth.still_valid(user)
            return False

        try:
            yield b"retry: 3000\n\n"
            for event_id, alert in missed:
                if await session_ended():
                    yield _LOGOUT
                    return
                sent.append(event_id)
                yield _frame(event_id, alert)
            next_ping = loop.time() + ctx.settings.events_ping_s
            while not ctx.stopping() and not sub.overflowed:
                item = None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.05, min(SESSION_CHECK_S, next_ping - loop.time()))):
                        item = await sub.queue.get()
                ping = loop.time() >= next_ping
                if (item is not None or ping or sub.ended.is_set()) and await session_ended(force=ping):
                    yield _LOGOUT
                    return
                if item is not None and item[0] not in sent:
                    sent.append(item[0])
                    yield _frame(*item)
                if ping:
                    yield b"event: ping\ndata: " + json.dumps({"at": ctx.now().isoformat()}).encode() + b"\n\n"
                    next_ping = loop.time() + ctx.settings.events_ping_s
        finally:
            ctx.feed.unsubscribe(sub)

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
