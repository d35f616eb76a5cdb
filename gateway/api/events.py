"""Live alert updates (Server-Sent Events), derived from ``alert_events`` in the database.

Every change to an alert writes an ``alert_events`` row, whichever gateway instance
made it, so one poller per process (``AlertFeed``, running only while someone listens)
reads new rows by id every ``api.events_poll_s`` and hands each subscriber the current
summary of every alert that changed and that the subscriber may see. The SSE id is the
``alert_events`` id: a client reconnecting with ``Last-Event-ID`` first gets what
changed since, from the database, then the live feed.

Ids are allocated before commit, so a slow transaction can commit an id lower than one
already read. The poller re-reads a trailing window (ids above the highest seen a few
seconds ago) and skips ids it has delivered, so such a late row is not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec
import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.responses import StreamingResponse

from gateway.api.alert_views import summaries
from gateway.api.auth import EVERYTHING, Principal, Scope
from gateway.api.schemas import AlertSummary, EventsQuery

if TYPE_CHECKING:
    from gateway.api.http import Call

log = logging.getLogger(__name__)

LATE_COMMIT_S = 5.0  # how long an id may stay invisible before its transaction commits
QUEUE_MAX = 2000  # a console this far behind is dropped; it reconnects with Last-Event-ID
BACKLOG_MAX = 2000


def may_see(user: Principal, alert: AlertSummary) -> bool:
    """The Python twin of ``Scope.alerts`` (the summary already carries the elder's community/grid)."""
    if user.role in EVERYTHING:
        return True
    if user.role == "post_station":
        return alert.community is not None and alert.community == user.community
    if user.role == "grid_worker":  # a grid is (community, grid): every community has its 网格1
        return alert.grid is not None and alert.grid == user.grid and (alert.community or "") == (user.community or "")
    return alert.elder_id is not None and alert.elder_id == user.elder_id


@dataclass(eq=False, slots=True)
class Subscriber:
    user: Principal
    queue: asyncio.Queue[tuple[int, AlertSummary]] = field(default_factory=lambda: asyncio.Queue(QUEUE_MAX))
    overflowed: bool = False


class AlertFeed:
    def __init__(self, pool: AsyncConnectionPool, poll_s: float) -> None:
        self.pool = pool
        self.poll_s = poll_s
        self.subscribers: set[Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._position: int | None = None
        self._marks: deque[tuple[float, int]] = deque()  # (monotonic time, highest id) per poll
        self._delivered: set[int] = set()

    def subscribe(self, user: Principal) -> Subscriber:
        sub = Subscriber(user)
        self.subscribers.add(sub)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="api-alert-feed")
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    async def _run(self) -> None:
        try:
            while self.subscribers:
                try:
                    await self.poll()
                except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as error:
                    log.warning("alert feed waiting for the database: %s", str(error).splitlines()[0:1])
                await asyncio.sleep(self.poll_s)
        finally:
            self._position = None  # the next listener starts from "now" again
            self._marks.clear()
            self._delivered.clear()

    async def poll(self) -> None:
        async with self.pool.connection() as conn:
            if self._position is None:
                cur = await conn.execute("SELECT coalesce(max(id), 0) FROM alert_events")
                row = await cur.fetchone()
                self._position = int(row[0]) if row else 0
                self._marks.append((time.monotonic(), self._position))
                return
            low = self._low_water()
            cur = await conn.execute(
                "SELECT id, alert_id FROM alert_events WHERE id > %s ORDER BY id LIMIT 5000", (low,)
            )
            rows = [(i, a) for i, a in await cur.fetchall() if i not in self._delivered]
            latest: dict[int, int] = {}
            for event_id, alert_id in rows:
                latest[alert_id] = event_id
                self._delivered.add(event_id)
            found = (
                {a.alert_id: a for a in await summaries(conn, "a.alert_id = ANY(%s)", [list(latest)])} if latest else {}
            )
        if rows:
            self._position = max(self._position, rows[-1][0])
        self._marks.append((time.monotonic(), self._position))
        for alert_id, event_id in sorted(latest.items(), key=lambda item: item[1]):
            alert = found.get(alert_id)
            if alert is not None:
                self._publish(event_id, alert)

    def _low_water(self) -> int:
        """The highest id seen at least ``LATE_COMMIT_S`` ago: everything above it is read again."""
        cutoff = time.monotonic() - LATE_COMMIT_S
        while len(self._marks) > 1 and self._marks[1][0] <= cutoff:
            self._marks.popleft()
        low = self._marks[0][1] if self._marks else (self._position or 0)
        self._delivered = {i for i in self._delivered if i > low}
        return low

    def _publish(self, event_id: int, alert: AlertSummary) -> None:
        for sub in list(self.subscribers):
            if sub.overflowed or not may_see(sub.user, alert):
                continue
            try:
                sub.queue.put_nowait((event_id, alert))
            except asyncio.QueueFull:
                sub.overflowed = True


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
        try:
            yield b"retry: 3000\n\n"
            for event_id, alert in missed:
                sent.append(event_id)
                yield _frame(event_id, alert)
            loop = asyncio.get_running_loop()
            next_ping = loop.time() + ctx.settings.events_ping_s
            while not ctx.stopping() and not sub.overflowed:
                item = None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.05, min(1.0, next_ping - loop.time()))):
                        item = await sub.queue.get()
                if item is not None and item[0] not in sent:
                    sent.append(item[0])
                    yield _frame(*item)
                if loop.time() >= next_ping:
                    if not await ctx.auth.still_valid(user):
                        yield b'event: logout\ndata: {"error": "session_expired"}\n\n'
                        return
                    yield b"event: ping\ndata: " + json.dumps({"at": ctx.now().isoformat()}).encode() + b"\n\n"
                    next_ping = loop.time() + ctx.settings.events_ping_s
        finally:
            ctx.feed.unsubscribe(sub)

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
