"""What happened so far, in scenario seconds: alerts, tier firings, notifications, detections.

Alerts, their audit trail, tier firings and the outbox come from the scenario's own
database (the gateway's system of record); what reached a phone comes from the fake
Twilio's records (a notification counts as sent when Twilio accepted it); detections
come from the gateway in this process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from gateway.service import Gateway
from simulators.providers.twilio.server import FakeTwilio
from simulators.scenario.clock import ScenarioClock


@dataclass(frozen=True, slots=True)
class AlertSeen:
    alert_id: int
    code: str
    elder_id: str | None
    kind: str
    severity: str
    state: str
    opened_s: float
    severity_s: dict[str, float]  # when a detection of each severity first reached the alert
    acknowledged_s: float | None
    acknowledged_by: str | None
    resolved_s: float | None
    resolved_by: str | None
    outcome: str | None

    def since_s(self, severity: str | None) -> float:
        """When the alert opened, or first had ``severity`` (its worst, when a selector names it)."""
        if severity is None:
            return self.opened_s
        return self.severity_s.get(severity, self.opened_s)

    def label(self) -> str:
        return f"{self.code} {self.kind} of {self.elder_id}"


@dataclass(frozen=True, slots=True)
class FiringSeen:
    alert_id: int
    tier: int  # 0-based, as stored
    round: int
    at_s: float
    reached: int


@dataclass(frozen=True, slots=True)
class NotificationSeen:
    id: int
    alert_id: int
    purpose: str
    tier: int | None  # 0-based
    round: int | None
    recipient_key: str
    name: str
    role: str
    phone: str
    channel: str
    status: str
    sent_s: float | None  # when the provider accepted it; None: not (yet) sent


@dataclass(frozen=True, slots=True)
class DetectionSeen:
    elder_id: str | None
    device_id: str
    kind: str
    severity: str
    at_s: float
    cleared: bool


@dataclass(frozen=True, slots=True)
class Observed:
    now_s: float  # scenario time the snapshot was started at
    settled_s: float  # everything stamped before this is in the snapshot
    alerts: tuple[AlertSeen, ...]
    firings: tuple[FiringSeen, ...]
    notifications: tuple[NotificationSeen, ...]
    detections: tuple[DetectionSeen, ...]


_PENDING = """
SELECT (SELECT count(*) FROM detections WHERE NOT handled)
     + (SELECT count(*) FROM notifications
        WHERE status = 'sending' OR (status = 'pending' AND next_attempt_at <= %(now)s))
     + (SELECT count(*) FROM alerts WHERE state <> 'resolved' AND next_check_at <= %(now)s),
       (SELECT min(next_check_at) FROM alerts WHERE state <> 'resolved' AND next_check_at > %(now)s)
"""


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class Observer:
    def __init__(
        self, dsn: str, fake: FakeTwilio, clock: ScenarioClock, gateway: Gateway, settle_real_s: float = 0.3
    ) -> None:
        self.dsn = dsn
        self.fake = fake
        self.clock = clock
        self.gateway = gateway
        self.settle_s = settle_real_s * clock.speed
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._sent: dict[str, float] = {}  # provider sid -> monotonic time the fake accepted it
        self._seen = (0, 0)

    def _sent_at(self) -> dict[str, float]:
        messages, calls = self.fake.messages, self.fake.calls
        for sid, accepted, at in [(m.sid, m.accepted, m.received_monotonic) for m in messages[self._seen[0] :]] + [
            (c.sid, c.accepted, c.received_monotonic) for c in calls[self._seen[1] :]
        ]:
            if sid and accepted:
                self._sent[sid] = at
        self._seen = (len(messages), len(calls))
        return self._sent

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None:
            # one consistent view per snapshot: an alert turning critical and its audit row, together
            self._conn = await psycopg.AsyncConnection.connect(self.dsn)
            await self._conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
            await self._conn.set_read_only(True)
        return self._conn

    async def pending(self) -> tuple[int, float]:
        """Work the gateway has not done yet at this scenario moment (unhandled detections,
        pages being or due to be sent, escalation checks that are due), and when the next
        escalation check falls (scenario s; infinity when none)."""
        conn = await self._connection()
        now = _ts(self.clock.now_ms())
        async with conn.transaction():
            cur = await conn.execute(_PENDING, {"now": now})
            row = await cur.fetchone()
        assert row is not None
        count, next_check = row
        return int(count), math.inf if next_check is None else self._s(next_check) or 0.0

    def _s(self, when: datetime | None) -> float | None:
        return None if when is None else self.clock.scenario_s(int(when.timestamp() * 1000))

    async def snapshot(self, quiet_s: float | None = None) -> Observed:
        """Everything so far. ``quiet_s``: the gateway was seen idle at this scenario time, so all it
        stamped up to then is in the database (else a margin of ``settle_real_s`` is allowed)."""
        now = self.clock.elapsed_s()
        settled = min(now, quiet_s) if quiet_s is not None else now - self.settle_s
        conn = await self._connection()
        async with conn.transaction():
            severity_s: dict[int, dict[str, float]] = {}
            cur = await conn.execute(
                "SELECT alert_id, min(at), detail->>'severity' FROM alert_events "
                "WHERE event IN ('opened', 'detection') AND detail ? 'severity' GROUP BY alert_id, detail->>'severity'"
            )
            for alert_id, at, severity in await cur.fetchall():
                severity_s.setdefault(alert_id, {})[severity] = self._s(at) or 0.0
            cur = await conn.execute(
                "SELECT alert_id, code, elder_id, kind, severity, state, opened_at, acknowledged_at, acknowledged_by, "
                "resolved_at, resolved_by, outcome FROM alerts ORDER BY alert_id"
            )
            alerts = []
            for (
                alert_id,
                code,
                elder,
                kind,
                severity,
                state,
                opened,
                acked,
                acked_by,
                resolved,
                resolved_by,
                outcome,
            ) in await cur.fetchall():
                opened_s = self._s(opened) or 0.0
                reached = {severity: opened_s, **severity_s.get(alert_id, {})}
                alerts.append(
                    AlertSeen(
                        alert_id,
                        code,
                        elder,
                        kind,
                        severity,
                        state,
                        opened_s,
                        reached,
                        self._s(acked),
                        acked_by,
                        self._s(resolved),
                        resolved_by,
                        outcome,
                    )
                )
            cur = await conn.execute("SELECT alert_id, tier, round, at, reached FROM tier_firings")
            firings = tuple(FiringSeen(a, t, r, self._s(at) or 0.0, n) for a, t, r, at, n in await cur.fetchall())
            sent_at = self._sent_at()
            cur = await conn.execute(
                "SELECT id, alert_id, purpose, tier, round, recipient_key, recipient_name, role, phone, channel, "
                "status, provider_sid FROM notifications ORDER BY id"
            )
            notifications = []
            for (
                nid,
                alert_id,
                purpose,
                tier,
                round_,
                key,
                name,
                role,
                phone,
                channel,
                status,
                sid,
            ) in await cur.fetchall():
                mono = sent_at.get(sid) if sid else None
                notifications.append(
                    NotificationSeen(
                        nid,
                        alert_id,
                        purpose,
                        tier,
                        round_,
                        key,
                        name,
                        role,
                        phone,
                        channel,
                        status,
                        None if mono is None else self.clock.at_monotonic(mono),
                    )
                )
        detections = tuple(
            DetectionSeen(d.elder_id, d.device_id, d.kind, d.severity, self.clock.scenario_s(d.ts_ms), d.cleared)
            for d in list(self.gateway.detections)
        )
        return Observed(now, settled, tuple(alerts), firings, tuple(notifications), detections)
