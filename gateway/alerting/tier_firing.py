"""Firing tiers: the I/O around :func:`gateway.alerting.escalation.next_step` for an alert that is due.

The decision stays pure over there; here the firings are read from and written to the
database, whose keys make a second gateway instance's attempt at the same tier a no-op.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import cast
from zoneinfo import ZoneInfo

from psycopg.types.json import Jsonb

from gateway.alerting import store
from gateway.alerting.escalation import (
    AlertState,
    AlertView,
    Done,
    Fire,
    Step,
    TierFiring,
    Wait,
    next_step,
    quiet_until,
)
from gateway.alerting.policy import EscalationConfig, PolicySpec, select_policy
from gateway.alerting.roster import Recipient, resolve_role
from gateway.alerting.store import AlertRow, Conn
from gateway.domain.people import Channel
from gateway.domain.registry import ElderSpec, RegistryFile

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


@dataclass(frozen=True, slots=True)
class FiringScope:
    """What firing a tier reads besides the alert: the policies, who is registered, the lease."""

    escalation: EscalationConfig
    policies: Mapping[str, PolicySpec]
    registry: RegistryFile
    elders: Mapping[str, ElderSpec]
    tz: ZoneInfo
    claim_lease_ms: int | None  # pages created claimed for the engine's sender, else None (the outbox sends them)

    def policy_of(self, alert: AlertRow) -> PolicySpec:
        """The policy the alert was opened under (or, if it is gone from the config, today's match)."""
        return self.policies.get(alert.policy) or select_policy(self.escalation, alert.kind, alert.severity)


async def firings(conn: Conn, alert_id: int) -> list[TierFiring]:
    cur = await conn.execute(
        "SELECT tier, round, at, reached FROM tier_firings WHERE alert_id = %s ORDER BY at, tier", (alert_id,)
    )
    return [TierFiring(t, r, store.ms(at) or 0, reached) for t, r, at, reached in await cur.fetchall()]


def _step(alert: AlertRow, policy: PolicySpec, fired: Sequence[TierFiring], now: int, scope: FiringScope) -> Step:
    view = AlertView(
        alert.alert_id,
        alert.kind,
        alert.severity,
        cast(AlertState, alert.state),  # the alerts table's CHECK constraint holds it to these
        alert.opened_ms,
        alert.confirm_until_ms,
        alert.acknowledged_ms,
        alert.eta_ms,
    )
    return next_step(
        view, policy, fired, now, escalation=scope.escalation, quiet_until_ms=quiet_until(scope.escalation, now)
    )


async def escalate(
    conn: Conn, alert: AlertRow, now: int, scope: FiringScope, fired: list[TierFiring] | None = None
) -> list[int]:
    """Take the next step for a due alert and set its next check; the ids of pages claimed for sending."""
    policy = scope.policy_of(alert)
    if fired is None:
        fired = await firings(conn, alert.alert_id)
    claimed: list[int] = []
    step = _step(alert, policy, fired, now, scope)
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
            return claimed
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
            alert = replace(alert, state="notifying")
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
            alert = replace(alert, state="notifying")
        ours = [await _fire(conn, alert, policy, tier, step.round, now, step.reason, scope) for tier in step.tiers]
        for firing in ours:
            if firing is not None:
                claimed.extend(firing[1])
        if all(f is not None for f in ours):
            fired = [*fired, *(f[0] for f in ours if f is not None)]
        else:  # another engine fired some of them: read what it recorded
            fired = await firings(conn, alert.alert_id)
        step = _step(alert, policy, fired, now, scope)
    if isinstance(step, Wait):
        await store.update(conn, alert.alert_id, next_check_ms=step.until_ms)
    elif isinstance(step, Done):
        await store.update(conn, alert.alert_id, next_check_ms=None)
    else:  # a second Fire right away: look again immediately (e.g. a tier that reached nobody)
        await store.update(conn, alert.alert_id, next_check_ms=now)
    return claimed


def _recipients(
    alert: AlertRow, policy: PolicySpec, tier: int, now: int, scope: FiringScope
) -> list[tuple[Recipient, list[Channel]]]:
    """Who the tier's roles resolve to for this alert now, each with the channels to use."""
    spec = policy.tiers[tier]
    elder = scope.elders.get(alert.elder_id or "")
    at = datetime.fromtimestamp(now / 1000, UTC).astimezone(scope.tz)
    recipients: list[tuple[Recipient, list[Channel]]] = []
    for role, channels in spec.roles.items():
        if elder is not None:
            people = resolve_role(role, elder, scope.registry, at, tz=scope.tz)
        elif role == "hotline":  # a device bound to no elder: only the hotline can act
            stand_in = ElderSpec(id=f"device:{alert.device_id}", name=f"device {alert.device_id}")
            people = resolve_role(role, stand_in, scope.registry, at, tz=scope.tz)
        else:
            people = []
        for person in people:
            usable = [c for c in channels if c in person.channels]
            # a tier asking for a channel this person does not take still reaches them
            recipients.append((person, usable or list(person.channels[:1])))
    return recipients


async def _fire(
    conn: Conn,
    alert: AlertRow,
    policy: PolicySpec,
    tier: int,
    round_: int,
    now: int,
    reason: str,
    scope: FiringScope,
) -> tuple[TierFiring, list[int]] | None:
    """Page one tier: the firing and the pages claimed; ``None`` when another engine had fired it already."""
    recipients = _recipients(alert, policy, tier, now, scope)
    lease = scope.claim_lease_ms
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
            "next": store.ts(now + lease if lease is not None else now),
            "status": "sending" if lease is not None else "pending",
            "attempts": 1 if lease is not None else 0,
            "detail": Jsonb(
                {
                    "tier": tier,
                    "round": round_,
                    "roles": list(policy.tiers[tier].roles),
                    "reached": [p.name for p, _ in recipients],
                    "reason": reason,
                }
            ),
        },
    )
    row = await cur.fetchone()
    if row is None or not row[0]:
        return None
    claimed = [int(i) for i in row[1]] if lease is not None else []
    return TierFiring(tier, round_, now, len(recipients)), claimed
