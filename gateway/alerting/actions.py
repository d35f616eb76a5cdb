"""What people do to an alert: take it, pass it on, arrive, close it, comment. One audit row each.

Used by the notifiers (SMS reply, key press), the HTTP API and the CLI through
``AlertEngine``. Taking an alert tells everyone already paged who took it; closing
a false alarm that already paged people sends them a retraction.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from psycopg.types.json import Jsonb

from gateway.alerting import store
from gateway.alerting.policy import PolicySpec
from gateway.alerting.store import AlertRow, Conn
from gateway.domain.registry import ElderSpec

Outcome = Literal["false_alarm", "handled_at_home", "sent_to_hospital", "condition_cleared", "other"]
OUTCOMES: tuple[str, ...] = ("false_alarm", "handled_at_home", "sent_to_hospital", "condition_cleared", "other")


class AlertError(ValueError):
    """The action cannot apply: unknown alert, already closed, or a bad outcome."""


@dataclass(frozen=True, slots=True)
class PagedRecipient:
    """Someone a page went to, as their first page recorded them (so a follow-up reaches the same phone)."""

    recipient_key: str
    recipient_name: str
    role: str
    phone: str
    language: str
    channels: list[str]
    provider: str | None


async def paged_recipients(conn: Conn, alert_id: int) -> list[PagedRecipient]:
    """Everyone a page went to for this alert, once each."""
    cur = await conn.execute(
        "SELECT DISTINCT ON (recipient_key) recipient_key, recipient_name, role, phone, language, channels, "
        "provider FROM notifications WHERE alert_id = %s AND purpose = 'page' ORDER BY recipient_key, id",
        (alert_id,),
    )
    return [PagedRecipient(*row) for row in await cur.fetchall()]


async def inform(
    conn: Conn,
    alert_id: int,
    purpose: str,
    now_ms: int,
    *,
    skip: str | None = None,
    detail: dict[str, Any] | None = None,
) -> int:
    """Queue a short message (``taken``, ``retraction``, ``resolved``) to everyone paged."""
    sent = 0
    for person in await paged_recipients(conn, alert_id):
        if skip and person.recipient_key == skip:
            continue
        channel = "sms" if "sms" in person.channels else "voice"
        cur = await conn.execute(
            "INSERT INTO notifications (alert_id, purpose, recipient_key, recipient_name, role, phone, "
            "language, channel, channels, provider, idempotency_key, next_attempt_at) VALUES "
            "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (
                alert_id,
                purpose,
                person.recipient_key,
                person.recipient_name,
                person.role,
                person.phone,
                person.language,
                channel,
                Jsonb(person.channels),
                person.provider,
                f"{alert_id}:{purpose}:{person.recipient_key}",
                store.ts(now_ms),
            ),
        )
        sent += cur.rowcount
    if sent:
        await store.event(
            conn, alert_id, now_ms, f"informed_{purpose}", actor="system", recipients=sent, **(detail or {})
        )
    return sent


async def resolve(
    conn: Conn, alert: AlertRow, actor: str, channel: str, outcome: str, note: str | None, now_ms: int
) -> None:
    if outcome not in OUTCOMES:
        raise AlertError(f"unknown outcome {outcome!r}; one of {', '.join(OUTCOMES)}")
    if alert.state == "resolved":
        raise AlertError(f"alert {alert.code} is already resolved ({alert.outcome}, by {alert.resolved_by})")
    await store.update(
        conn,
        alert.alert_id,
        state="resolved",
        resolved_ms=now_ms,
        resolved_by=actor,
        outcome=outcome,
        next_check_ms=None,
    )
    await store.event(
        conn, alert.alert_id, now_ms, "resolved", actor=actor, channel=channel, outcome=outcome, note=note
    )
    await inform(
        conn,
        alert.alert_id,
        "retraction" if outcome == "false_alarm" else "resolved",
        now_ms,
        detail={"outcome": outcome},
    )


async def acknowledge(
    conn: Conn,
    alert: AlertRow,
    actor: str,
    actor_key: str | None,
    channel: str,
    eta_s: float | None,
    note: str | None,
    now_ms: int,
    *,
    margin_s: float,
    default_eta_s: float,
) -> bool:
    """Take the alert; False if this person had already taken it (a repeated webhook)."""
    if alert.state == "resolved":
        raise AlertError(f"alert {alert.code} is already resolved")
    if alert.state in ("acknowledged", "on_scene"):
        if alert.acknowledged_by == actor:
            return False
        await store.event(
            conn,
            alert.alert_id,
            now_ms,
            "ack_after_taken",
            actor=actor,
            channel=channel,
            taken_by=alert.acknowledged_by,
        )
        return False
    eta_ms = now_ms + int((eta_s if eta_s is not None else default_eta_s) * 1000)
    await store.update(
        conn,
        alert.alert_id,
        state="acknowledged",
        acknowledged_ms=now_ms,
        acknowledged_by=actor,
        eta_ms=eta_ms,
        next_check_ms=eta_ms + int(margin_s * 1000),
    )
    await store.event(
        conn,
        alert.alert_id,
        now_ms,
        "acknowledged",
        actor=actor,
        channel=channel,
        eta_s=(eta_ms - now_ms) / 1000,
        note=note,
    )
    await inform(conn, alert.alert_id, "taken", now_ms, skip=actor_key, detail={"taken_by": actor})
    return True


async def on_scene(conn: Conn, alert: AlertRow, actor: str, channel: str, now_ms: int) -> None:
    if alert.state not in ("acknowledged", "notifying", "confirming"):
        raise AlertError(f"alert {alert.code} is {alert.state}")
    fields: dict[str, Any] = {"state": "on_scene", "on_scene_ms": now_ms, "next_check_ms": None}
    if alert.acknowledged_ms is None:
        fields.update(acknowledged_ms=now_ms, acknowledged_by=actor)
    await store.update(conn, alert.alert_id, **fields)
    await store.event(conn, alert.alert_id, now_ms, "on_scene", actor=actor, channel=channel)


async def note(conn: Conn, alert: AlertRow, actor: str, channel: str, text: str, now_ms: int) -> None:
    await store.event(conn, alert.alert_id, now_ms, "note", actor=actor, channel=channel, text=text)


async def pass_on(
    conn: Conn,
    alert: AlertRow,
    actor: str,
    channel: str,
    actor_key: str | None,
    now_ms: int,
    policy_of: Callable[[AlertRow], PolicySpec],
) -> None:
    """The person paged declines ("press 2"): once everyone in the current tier has, move on now."""
    await store.event(conn, alert.alert_id, now_ms, "passed_on", actor=actor, channel=channel, actor_key=actor_key)
    if alert.state not in ("notifying", "confirming"):
        return
    cur = await conn.execute(
        "SELECT f.tier, f.round FROM tier_firings f WHERE f.alert_id = %s ORDER BY f.tier DESC, f.round DESC LIMIT 1",
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
        wait_ms = int(policy_of(alert).tiers[tier].wait_s * 1000)
        await conn.execute(
            "UPDATE tier_firings SET at = at - make_interval(secs => %s) WHERE "
            "alert_id = %s AND tier = %s AND round = %s",
            (wait_ms / 1000, alert.alert_id, tier, round_),
        )
        await store.update(conn, alert.alert_id, next_check_ms=now_ms)
        await store.event(conn, alert.alert_id, now_ms, "tier_declined", actor="system", tier=tier)


def near_home(elder: ElderSpec, lat: float, lon: float, radius_m: float) -> bool:
    """Whether a reported position is within ``radius_m`` of the elder's home (flat-earth metres)."""
    if elder.home is None:
        return False
    dy = (lat - elder.home.lat) * 110_574
    dx = (lon - elder.home.lon) * 111_320 * math.cos(math.radians(elder.home.lat))
    return math.hypot(dx, dy) <= radius_m
