"""The alert engine: detections become alerts, due alerts escalate, tier by tier.

Two loops, both driven from the database so that a restart or a second gateway
instance carries on where the first stopped:

* ``process_detections`` claims unhandled detection rows (``FOR UPDATE SKIP LOCKED``),
  applies the lifecycle decision and marks them handled in the same transaction:
  each detection changes the alerts exactly once.
* ``run_due`` claims alerts whose ``next_check_at`` has come (the escalation timer is
  that column, not a sleeping task), asks ``next_step`` what to do, records the tier
  firing (its primary key makes a second engine's attempt a no-op) and writes one
  outbox row per recipient and channel, then sets the next check time.

The clock is injected; the engine never reads the wall clock itself.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from gateway.domain.detection import CANCEL_LATE, CMD_RECEIVED, SEVERITY_LEVEL, Detection
from gateway.domain.people import Channel
from gateway.domain.registry import ElderSpec, RegistryFile
from rules import actions, store
from rules.actions import AlertError
from rules.escalation import AlertView, Done, Fire, TierFiring, Wait, next_step, quiet_until
from rules.lifecycle import (
    MarkRecovered,
    Note,
    Open,
    OpenAlert,
    Resolve,
    Retract,
    Update,
    alert_key,
    alert_kind,
    is_cancel,
    on_cancel,
    on_detection,
    retracted_kind,
)
from rules.policy import EscalationConfig, PolicySpec, select_policy
from rules.roster import Recipient, resolve_role
from rules.store import AlertRow, Conn

log = logging.getLogger(__name__)

DETECTIONS_LOCK = 7_311_002  # advisory lock: one engine applies detections at a time


@dataclass(frozen=True, slots=True)
class Downlink:
    """A command for a device (``cmd`` topic), e.g. "are you OK?" or "help is coming"."""

    device_type: str
    device_id: str
    payload: dict[str, Any]

    @property
    def topic(self) -> str:
        return f"eldercare/v1/{self.device_type}/{self.device_id}/cmd"


# The lock first (a CTE calling a volatile function is evaluated once, before the lateral
# subquery that depends on it), then the unhandled detections in order: one round trip.
# One row of NULLs after the lock flag when there are none.
_UNHANDLED = """
WITH lock AS (SELECT pg_try_advisory_xact_lock(%s) AS held)
SELECT lock.held, d.id, d.elder_id, d.device_id, d.kind, d.severity, d.ts, d.cleared, d.evidence
FROM lock LEFT JOIN LATERAL (
    SELECT * FROM detections WHERE lock.held AND NOT handled ORDER BY id LIMIT %s) d ON true
"""

# One round trip fires a tier: its firing row (unique per alert, tier and round, so a second
# engine firing the same tier inserts nothing and pages no one), a page per person and
# channel (the engine's pre-claimed ones under their first lease), and the trail entry.
_FIRE = """
WITH fired AS (
    INSERT INTO tier_firings (alert_id, tier, round, at, reached)
    VALUES (%(alert)s, %(tier)s, %(round)s, %(at)s, %(reached)s) ON CONFLICT DO NOTHING RETURNING 1),
paged AS (
    INSERT INTO notifications (alert_id, purpose, tier, round, recipient_key, recipient_name, role, phone, language,
                               channel, channels, provider, idempotency_key, next_attempt_at, status, attempts)
    SELECT %(alert)s, 'page', %(tier)s, %(round)s, p.key, p.name, p.role, p.phone, p.language, p.channel, p.channels,
           p.provider, p.idem, %(next)s, %(status)s, %(attempts)s
    FROM jsonb_to_recordset(%(pages)s) AS p(key text, name text, role text, phone text, language text,
                                            channel text, channels jsonb, provider text, idem text)
    WHERE EXISTS (SELECT 1 FROM fired)
    ON CONFLICT DO NOTHING RETURNING id),
logged AS (
    INSERT INTO alert_events (alert_id, at, event, actor, channel, detail)
    SELECT %(alert)s, %(at)s, 'tier_fired', 'system', NULL, %(detail)s WHERE EXISTS (SELECT 1 FROM fired))
SELECT EXISTS (SELECT 1 FROM fired), ARRAY(SELECT id FROM paged ORDER BY id)
"""


class AlertEngine:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        escalation: EscalationConfig,
        registry: RegistryFile,
        clock_ms: Callable[[], int],
        downlink: Callable[[Downlink], Awaitable[None]] | None = None,
        claimed: Callable[[list[int]], Awaitable[None]] | None = None,
        lease_s: float = 20.0,
    ) -> None:
        self.pool = pool
        self.escalation = escalation
        self.registry = registry
        self.clock_ms = clock_ms
        self.downlink = downlink
        self.elders: dict[str, ElderSpec] = {e.id: e for e in registry.elders}
        self.policies: dict[str, PolicySpec] = {p.name: p for p in escalation.policies}
        self.tz = ZoneInfo(escalation.timezone)
        self._downlinks: list[Downlink] = []
        # With a sender attached, pages are created already claimed (with its lease) and
        # handed to it after the commit: no second transaction before the first SMS. If
        # the process dies first, the lease runs out and the outbox poller sends them.
        self.claimed = claimed
        self.lease_ms = int(lease_s * 1000)
        self._claimed: list[int] = []
        self._opened_now: list[int] = []

    def use_registry(self, registry: RegistryFile) -> None:
        """Elders, contacts and responders changed (console, import): page from the new ones."""
        self.registry = registry
        self.elders = {e.id: e for e in registry.elders}

    # -- detections -> alerts ------------------------------------------------------------

    async def process_detections(self, limit: int = 500) -> int:
        """Apply unhandled detections in order; return how many were handled.

        One engine at a time does this (a transaction-level advisory lock; the others
        return at once): an SOS and its withdrawal, or two detections of one key seen
        by two gateway instances, must be applied in the order they were detected.
        """
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(_UNHANDLED, (DETECTIONS_LOCK, limit))
            found = await cur.fetchall()
            if not found or not found[0][0]:
                return 0
            rows = [r[1:] for r in found if r[1] is not None]
            for det_id, elder_id, device_id, kind, severity, when, cleared, evidence in rows:
                det = Detection(elder_id, device_id, kind, severity, store.ms(when) or 0, evidence, cleared)
                alert_id = await self._apply(conn, det)
                await conn.execute(
                    "UPDATE detections SET handled = true, alert_id = %s WHERE id = %s", (alert_id, det_id)
                )
            # an alert that pages at once (no confirmation window) fires its first tiers now,
            # in this transaction: one commit between the SOS and the first page
            opened, self._opened_now = self._opened_now, []
            now = self.clock_ms()
            for alert_id in opened:
                alert = await store.by_ref(conn, alert_id)
                if alert is not None and alert.state == "notifying":
                    await self._escalate(conn, alert, now, fired=[])  # opened just now: nothing fired yet
        await self._after_commit()
        return len(rows)

    async def _after_commit(self) -> None:
        claimed, self._claimed = self._claimed, []
        if claimed and self.claimed is not None:
            await self.claimed(claimed)
        await self._flush_downlinks()

    async def _apply(self, conn: Conn, det: Detection) -> int | None:
        now = self.clock_ms()
        if det.kind == CMD_RECEIVED:
            alert = await store.by_ref(conn, str(det.evidence.get("alert") or ""), lock=False)
            if alert is None:
                return None
            await store.event(
                conn, alert.alert_id, now, "device_received", actor="elder", channel="device", device=det.device_id
            )
            return alert.alert_id
        if is_cancel(det):
            if det.elder_id is None:
                return None
            rows = await store.fetch(conn, "elder_id = %s AND state = 'confirming'", (det.elder_id,), lock="FOR UPDATE")
            changes = on_cancel([OpenAlert(r.alert_id, r.kind, r.severity, r.state, r.recovered) for r in rows])
            for change in changes:
                await self._change(conn, change, det, now)
            return rows[0].alert_id if rows else None
        kind = retracted_kind(det) if det.kind == CANCEL_LATE else alert_kind(det.kind)
        key = alert_key(det.elder_id, det.device_id, kind)
        current = await store.open_alert(conn, key)
        change = on_detection(det, _open(current) if current else None)
        return await self._change(conn, change, det, now, key=key, current=current)

    async def _change(
        self, conn: Conn, change: Any, det: Detection, now: int, *, key: str = "", current: AlertRow | None = None
    ) -> int | None:
        if isinstance(change, Open):
            return await self._open(conn, change, det, key, now)
        if isinstance(change, Update):
            assert current is not None
            fields: dict[str, Any] = {
                "last_seen_ms": now,
                "severity": change.severity,
                "detection_count": current.detection_count + 1,
                "evidence": {**current.evidence, **det.evidence},
            }
            if change.worse:
                policy = select_policy(self.escalation, current.kind, change.severity)
                fields["policy"] = policy.name
                if current.state == "confirming":
                    fields["state"] = "notifying"
                    fields["next_check_ms"] = now
            await store.update(conn, change.alert_id, **fields)
            await store.event(
                conn,
                change.alert_id,
                now,
                "detection",
                actor="system",
                kind=det.kind,
                severity=det.severity,
                reason=change.reason,
            )
            return change.alert_id
        if isinstance(change, Resolve):
            await self._resolve(
                conn,
                change.alert_id,
                change.actor,
                "device" if change.actor == "elder" else "system",
                change.outcome,
                change.reason,
                now,
            )
            return change.alert_id
        if isinstance(change, MarkRecovered):
            await store.update(conn, change.alert_id, recovered=True)
            await store.event(
                conn, change.alert_id, now, "recovered", actor="elder", channel="device", reason=change.reason
            )
            return change.alert_id
        if isinstance(change, Retract):
            await store.update(conn, change.alert_id, recovered=True)
            await store.event(
                conn, change.alert_id, now, "late_cancel", actor="elder", channel="device", reason=change.reason
            )
            await actions.inform(conn, change.alert_id, "retraction", now, detail={"late_cancel": True})
            return change.alert_id
        if isinstance(change, Note):
            await store.event(conn, change.alert_id, now, change.event, actor="system", reason=change.reason)
            return change.alert_id
        return None

    async def _open(self, conn: Conn, change: Open, det: Detection, key: str, now: int) -> int:
        policy = select_policy(self.escalation, change.kind, change.severity)
        elder = self.elders.get(det.elder_id or "")
        confirm = int(policy.confirm_window_s * 1000)
        state = "confirming" if confirm > 0 else "notifying"
        alert_id = await store.insert_alert(
            conn,
            key=key,
            elder_id=det.elder_id,
            device_id=det.device_id,
            kind=change.kind,
            severity=change.severity,
            state=state,
            policy=policy.name,
            community=elder.community if elder else None,
            grid=elder.grid if elder else None,
            now_ms=now,
            evidence=det.evidence,
            confirm_until_ms=now + confirm if confirm else None,
            next_check_ms=now + confirm if confirm else now,
            opened={"kind": det.kind, "severity": change.severity, "policy": policy.name, "reason": change.reason},
        )
        if not confirm:
            self._opened_now.append(alert_id)
        if confirm and elder:
            device = _elder_device(elder)
            if device:
                self._downlinks.append(
                    Downlink(
                        device[0],
                        device[1],
                        {
                            "cmd": "confirm",
                            "alert": f"A{alert_id}",
                            "timeout_s": policy.confirm_window_s,
                            "vibrate": "are_you_ok",
                        },
                    )
                )
                await store.event(
                    conn,
                    alert_id,
                    now,
                    "asked_elder",
                    actor="system",
                    channel="device",
                    device=device[1],
                    window_s=policy.confirm_window_s,
                )
        return alert_id

    async def _flush_downlinks(self) -> None:
        pending, self._downlinks = self._downlinks, []
        if self.downlink is None:
            return
        for command in pending:
            try:
                await self.downlink(command)
            except Exception as error:  # a device command is best effort; paging is not
                log.warning("could not send %s to %s: %s", command.payload.get("cmd"), command.device_id, error)

    # -- escalation timers -----------------------------------------------------------------

    async def run_due(self, limit: int = 100) -> int:
        """Escalate every alert whose check time has come; return how many were looked at."""
        now = self.clock_ms()
        async with self.pool.connection() as conn, conn.transaction():
            due = await store.fetch(
                conn,
                "state <> 'resolved' AND next_check_at <= %s ORDER BY next_check_at LIMIT %s",
                (store.ts(now), limit),
                lock="FOR UPDATE SKIP LOCKED",
            )
            for alert in due:
                await self._escalate(conn, alert, now)
        await self._after_commit()
        return len(due)

    async def _firings(self, conn: Conn, alert_id: int) -> list[TierFiring]:
        cur = await conn.execute(
            "SELECT tier, round, at, reached FROM tier_firings WHERE alert_id = %s ORDER BY at, tier", (alert_id,)
        )
        return [TierFiring(t, r, store.ms(at) or 0, reached) for t, r, at, reached in await cur.fetchall()]

    def _step(self, alert: AlertRow, policy: PolicySpec, fired: Sequence[TierFiring], now: int) -> Any:
        view = AlertView(
            alert.alert_id,
            alert.kind,
            alert.severity,
            alert.state,  # type: ignore[arg-type]
            alert.opened_ms,
            alert.confirm_until_ms,
            alert.acknowledged_ms,
            alert.eta_ms,
        )
        return next_step(
            view, policy, fired, now, escalation=self.escalation, quiet_until_ms=quiet_until(self.escalation, now)
        )

    async def _escalate(self, conn: Conn, alert: AlertRow, now: int, fired: list[TierFiring] | None = None) -> None:
        policy = self.policies.get(alert.policy) or select_policy(self.escalation, alert.kind, alert.severity)
        if fired is None:
            fired = await self._firings(conn, alert.alert_id)
        step = self._step(alert, policy, fired, now)
        if isinstance(step, Fire):
            highest = max((f.tier for f in fired), default=-1)
            if alert.recovered and max(step.tiers) > highest:
                await store.update(conn, alert.alert_id, next_check_ms=None)
                await store.event(
                    conn,
                    alert.alert_id,
                    now,
                    "escalation_stopped",
                    actor="system",
                    reason="the elder is moving again after the fall",
                    paged_tiers=highest + 1,
                )
                return
            if alert.state == "confirming":
                await store.update(conn, alert.alert_id, state="notifying")
                await store.event(
                    conn,
                    alert.alert_id,
                    now,
                    "confirmation_ended",
                    actor="system",
                    reason="no cancel from the elder within the window",
                )
                alert = _replace_state(alert, "notifying")
            elif alert.state == "acknowledged":
                # taking an alert must not stall it: paging resumes, with the usual waits
                await store.update(conn, alert.alert_id, state="notifying")
                await store.event(
                    conn,
                    alert.alert_id,
                    now,
                    "ack_lapsed",
                    actor="system",
                    taken_by=alert.acknowledged_by,
                    reason=step.reason,
                )
                alert = _replace_state(alert, "notifying")
            ours = [await self._fire(conn, alert, policy, tier, step.round, now, step.reason) for tier in step.tiers]
            if all(f is not None for f in ours):
                fired = [*fired, *(f for f in ours if f is not None)]
            else:  # another engine fired some of them: read what it recorded
                fired = await self._firings(conn, alert.alert_id)
            step = self._step(alert, policy, fired, now)
        if isinstance(step, Wait):
            await store.update(conn, alert.alert_id, next_check_ms=step.until_ms)
        elif isinstance(step, Done):
            await store.update(conn, alert.alert_id, next_check_ms=None)
        else:  # a second Fire right away: look again immediately (e.g. a tier that reached nobody)
            await store.update(conn, alert.alert_id, next_check_ms=now)

    async def _fire(
        self, conn: Conn, alert: AlertRow, policy: PolicySpec, tier: int, round_: int, now: int, reason: str
    ) -> TierFiring | None:
        """Page one tier; ``None`` when another engine had fired it already."""
        spec = policy.tiers[tier]
        elder = self.elders.get(alert.elder_id or "")
        at = datetime.fromtimestamp(now / 1000, UTC).astimezone(self.tz)
        recipients: list[tuple[Recipient, list[Channel]]] = []
        for role, channels in spec.roles.items():
            if elder is not None:
                people = resolve_role(role, elder, self.registry, at, tz=self.tz)
            elif role == "hotline":  # a device bound to no elder: only the hotline can act
                stand_in = ElderSpec(id=f"device:{alert.device_id}", name=f"device {alert.device_id}")
                people = resolve_role(role, stand_in, self.registry, at, tz=self.tz)
            else:
                people = []
            for person in people:
                usable = [c for c in channels if c in person.channels]
                # a tier asking for a channel this person does not take still reaches them
                recipients.append((person, usable or list(person.channels[:1])))
        claim = self.claimed is not None
        pages = [
            {
                "key": person.key,
                "name": person.name,
                "role": person.role,
                "phone": person.phone,
                "language": person.language,
                "channel": channel,
                "channels": list(person.channels),
                "provider": person.provider,
                "idem": f"{alert.alert_id}:page:{tier}:{round_}:{person.key}:{channel}",
            }
            for person, channels in recipients
            for channel in channels
        ]
        cur = await conn.execute(
            _FIRE,
            {
                "alert": alert.alert_id,
                "tier": tier,
                "round": round_,
                "at": store.ts(now),
                "reached": len(recipients),
                "pages": Jsonb(pages),
                "next": store.ts(now + self.lease_ms if claim else now),
                "status": "sending" if claim else "pending",
                "attempts": 1 if claim else 0,
                "detail": Jsonb(
                    {
                        "tier": tier,
                        "round": round_,
                        "roles": list(spec.roles),
                        "reached": [p.name for p, _ in recipients],
                        "reason": reason,
                    }
                ),
            },
        )
        row = await cur.fetchone()
        if row is None or not row[0]:
            return None
        if claim:
            self._claimed.extend(int(i) for i in row[1])
        return TierFiring(tier, round_, now, len(recipients))

    # -- what people do ----------------------------------------------------------------------

    async def _resolve(
        self, conn: Conn, alert_id: int, actor: str, channel: str, outcome: str, reason: str, now: int
    ) -> None:
        alert = await store.by_ref(conn, alert_id)
        if alert is None or alert.state == "resolved":
            return
        await actions.resolve(conn, alert, actor, channel, outcome, reason, now)

    async def _locked(self, conn: Conn, ref: int | str) -> AlertRow:
        alert = await store.by_ref(conn, ref)
        if alert is None:
            raise AlertError(f"no alert {ref}")
        return alert

    async def acknowledge(
        self,
        ref: int | str,
        actor: str,
        channel: str,
        *,
        actor_key: str | None = None,
        eta_s: float | None = None,
        note: str | None = None,
    ) -> AlertRow:
        """A responder takes the alert; the elder's device is told help is coming."""
        now = self.clock_ms()
        async with self.pool.connection() as conn, conn.transaction():
            alert = await self._locked(conn, ref)
            taken = await actions.acknowledge(
                conn,
                alert,
                actor,
                actor_key,
                channel,
                eta_s,
                note,
                now,
                margin_s=self.escalation.on_scene_margin_s,
                default_eta_s=self.escalation.default_eta_s,
            )
            if taken:
                elder = self.elders.get(alert.elder_id or "")
                device = _elder_device(elder) if elder else None
                if device:
                    self._downlinks.append(
                        Downlink(
                            device[0],
                            device[1],
                            {"cmd": "help_coming", "alert": alert.code, "by": actor, "vibrate": "reassure"},
                        )
                    )
                    await store.event(
                        conn, alert.alert_id, now, "reassured_elder", actor="system", channel="device", device=device[1]
                    )
            result = await self._locked(conn, alert.alert_id)
        await self._flush_downlinks()
        return result

    async def pass_on(self, ref: int | str, actor: str, channel: str, *, actor_key: str | None = None) -> None:
        """The person paged declines ("press 2"): once everyone in the current tier has, move on now."""
        now = self.clock_ms()
        async with self.pool.connection() as conn, conn.transaction():
            alert = await self._locked(conn, ref)
            await store.event(conn, alert.alert_id, now, "passed_on", actor=actor, channel=channel, actor_key=actor_key)
            if alert.state not in ("notifying", "confirming"):
                return
            cur = await conn.execute(
                "SELECT f.tier, f.round FROM tier_firings f WHERE f.alert_id = %s ORDER BY f.tier DESC, "
                "f.round DESC LIMIT 1",
                (alert.alert_id,),
            )
            latest = await cur.fetchone()
            if latest is None:
                return
            tier, round_ = latest
            cur = await conn.execute(
                "SELECT count(DISTINCT n.recipient_key) FILTER (WHERE NOT EXISTS (SELECT 1 FROM alert_events e "
                "WHERE e.alert_id = n.alert_id AND e.event = 'passed_on' AND e.detail->>'actor_key' = "
                "n.recipient_key)) FROM notifications n WHERE n.alert_id = %s AND n.purpose = 'page' "
                "AND n.tier = %s AND n.round = %s",
                (alert.alert_id, tier, round_),
            )
            left = await cur.fetchone()
            if left is not None and left[0] == 0:
                # everyone in this tier declined: its wait is over, so the next check moves on
                policy = self.policies.get(alert.policy) or select_policy(self.escalation, alert.kind, alert.severity)
                wait_ms = int(policy.tiers[tier].wait_s * 1000)
                await conn.execute(
                    "UPDATE tier_firings SET at = at - make_interval(secs => %s) WHERE "
                    "alert_id = %s AND tier = %s AND round = %s",
                    (wait_ms / 1000, alert.alert_id, tier, round_),
                )
                await store.update(conn, alert.alert_id, next_check_ms=now)
                await store.event(conn, alert.alert_id, now, "tier_declined", actor="system", tier=tier)

    async def on_scene(self, ref: int | str, actor: str, channel: str) -> AlertRow:
        now = self.clock_ms()
        async with self.pool.connection() as conn, conn.transaction():
            await actions.on_scene(conn, await self._locked(conn, ref), actor, channel, now)
            return await self._locked(conn, ref)

    async def resolve(
        self, ref: int | str, actor: str, channel: str, outcome: str, note: str | None = None
    ) -> AlertRow:
        now = self.clock_ms()
        async with self.pool.connection() as conn, conn.transaction():
            await actions.resolve(conn, await self._locked(conn, ref), actor, channel, outcome, note, now)
            return await self._locked(conn, ref)

    async def add_note(self, ref: int | str, actor: str, channel: str, text: str) -> None:
        now = self.clock_ms()
        async with self.pool.connection() as conn, conn.transaction():
            await actions.note(conn, await self._locked(conn, ref), actor, channel, text, now)

    async def responder_position(self, actor: str, lat: float, lon: float, radius_m: float = 150) -> list[str]:
        """A responder's reported position: arriving at an elder they took puts them on scene."""
        import math

        now = self.clock_ms()
        arrived: list[str] = []
        async with self.pool.connection() as conn, conn.transaction():
            for alert in await store.fetch(
                conn, "state = 'acknowledged' AND acknowledged_by = %s", (actor,), lock="FOR UPDATE"
            ):
                elder = self.elders.get(alert.elder_id or "")
                if elder is None or elder.home is None:
                    continue
                dy = (lat - elder.home.lat) * 110_574
                dx = (lon - elder.home.lon) * 111_320 * math.cos(math.radians(elder.home.lat))
                if math.hypot(dx, dy) <= radius_m:
                    await actions.on_scene(conn, alert, actor, "position", now)
                    arrived.append(alert.code)
        return arrived


def _open(row: AlertRow | None) -> OpenAlert | None:
    if row is None:
        return None
    return OpenAlert(row.alert_id, row.kind, row.severity, row.state, row.recovered)


def _replace_state(alert: AlertRow, state: str) -> AlertRow:
    from dataclasses import replace

    return replace(alert, state=state)


def _elder_device(elder: ElderSpec) -> tuple[str, str] | None:
    """The device to ask or reassure the elder through: the band, else the pager."""
    for kind in ("wristband", "pager"):
        for device in elder.devices:
            if device.type == kind:
                return kind, device.id
    return None


def worst(a: str, b: str) -> str:
    return a if SEVERITY_LEVEL[a] >= SEVERITY_LEVEL[b] else b
