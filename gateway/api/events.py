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
import logging
import time
from collections import deque
from dataclasses import dataclass, field

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from gateway.api.alert_views import summaries
from gateway.api.auth import EVERYTHING, Principal
from gateway.api.schemas import AlertSummary

log = logging.getLogger(__name__)

SESSION_CHECK_S = 1.0  # a stream sending frames re-reads its session this often (logout elsewhere, expiry)
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
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # its session was ended (logout)


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

    def end_session(self, session: bytes) -> None:
        """A logout here: this session's streams send nothing more."""
        for sub in list(self.subscribers):
            if sub.user.session == session:
                sub.ended.set()

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
