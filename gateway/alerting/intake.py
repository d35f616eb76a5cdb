"""Detections become alert changes: :mod:`gateway.alerting.lifecycle` decides, this writes them.

Each call runs inside the engine's transaction, which also marks the detection handled, so
a detection changes the alerts exactly once. What must happen after the commit (asking the
elder, paging at once) is returned in :class:`Applied`, not done here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, assert_never

from gateway.alerting import actions, store
from gateway.alerting.downlinks import Downlink, elder_device
from gateway.alerting.lifecycle import (
    Change,
    Ignore,
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
from gateway.alerting.policy import EscalationConfig, select_policy
from gateway.alerting.store import AlertRow, Conn
from gateway.domain.detection import CANCEL_LATE, CMD_RECEIVED, Detection
from gateway.domain.registry import ElderSpec

DETECTIONS_LOCK = 7_311_002  # advisory lock: one engine applies detections at a time

# The lock first (a CTE calling a volatile function is evaluated once, before the lateral
# subquery that depends on it), then the unhandled detections in order: one round trip.
# One row of NULLs after the lock flag when there are none.
_UNHANDLED = """
WITH lock AS (SELECT pg_try_advisory_xact_lock(%s) AS held)
SELECT lock.held, d.id, d.elder_id, d.device_id, d.kind, d.severity, d.ts, d.cleared, d.evidence
FROM lock LEFT JOIN LATERAL (
    SELECT * FROM detections WHERE lock.held AND NOT handled ORDER BY id LIMIT %s) d ON true
"""


@dataclass(frozen=True, slots=True)
class Applied:
    """What one detection did, and what the engine still owes it once the transaction commits."""

    alert_id: int | None  # the alert it touched, recorded on the detection row
    page_now: bool = False  # opened with no confirmation window: fire its first tiers now
    ask: Downlink | None = None  # "are you OK?" to the elder's device, sent after the commit


async def claim(conn: Conn, limit: int) -> list[tuple[int, Detection]] | None:
    """The unhandled detections in order, locked to this engine; None if another engine holds them."""
    cur = await conn.execute(_UNHANDLED, (DETECTIONS_LOCK, limit))
    found = await cur.fetchall()
    if not found or not found[0][0]:
        return None
    rows = [r[1:] for r in found if r[1] is not None]
    return [
        (det_id, Detection(elder_id, device_id, kind, severity, store.ms(when) or 0, evidence, cleared))
        for det_id, elder_id, device_id, kind, severity, when, cleared, evidence in rows
    ]


async def mark_handled(conn: Conn, det_id: int, alert_id: int | None) -> None:
    await conn.execute("UPDATE detections SET handled = true, alert_id = %s WHERE id = %s", (alert_id, det_id))


async def apply(
    conn: Conn, det: Detection, now: int, escalation: EscalationConfig, elders: Mapping[str, ElderSpec]
) -> Applied:
    """Apply one detection to the alerts of its key (or, for a cancel, of its elder)."""
    if det.kind == CMD_RECEIVED:
        alert = await store.by_ref(conn, str(det.evidence.get("alert") or ""), lock=False)
        if alert is None:
            return Applied(None)
        await store.event(
            conn, alert.alert_id, now, "device_received", actor="elder", channel="device", device=det.device_id
        )
        return Applied(alert.alert_id)
    if is_cancel(det):
        if det.elder_id is None:
            return Applied(None)
        rows = await store.fetch(conn, "elder_id = %s AND state = 'confirming'", (det.elder_id,), lock="FOR UPDATE")
        for change in on_cancel([_as_open(r) for r in rows]):
            await _change(conn, change, det, now, escalation, elders)
        return Applied(rows[0].alert_id if rows else None)
    kind = retracted_kind(det) if det.kind == CANCEL_LATE else alert_kind(det.kind)
    key = alert_key(det.elder_id, det.device_id, kind)
    current = await store.open_alert(conn, key)
    change = on_detection(det, _as_open(current) if current else None)
    return await _change(conn, change, det, now, escalation, elders, key=key, current=current)


async def _change(
    conn: Conn,
    change: Change,
    det: Detection,
    now: int,
    escalation: EscalationConfig,
    elders: Mapping[str, ElderSpec],
    *,
    key: str = "",
    current: AlertRow | None = None,
) -> Applied:
    """Write one change; the alert it touched (none for an ``Ignore``)."""
    if isinstance(change, Open):
        return await _open(conn, change, det, key, now, escalation, elders)
    if isinstance(change, Update):
        assert current is not None
        fields: dict[str, Any] = {
            "last_seen_ms": now,
            "severity": change.severity,
            "detection_count": current.detection_count + 1,
            "evidence": {**current.evidence, **det.evidence},
        }
        if change.worse:
            policy = select_policy(escalation, current.kind, change.severity)
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
        return Applied(change.alert_id)
    if isinstance(change, Resolve):
        await _resolve(
            conn,
            change.alert_id,
            change.actor,
            "device" if change.actor == "elder" else "system",
            change.outcome,
            change.reason,
            now,
        )
        return Applied(change.alert_id)
    if isinstance(change, MarkRecovered):
        await store.update(conn, change.alert_id, recovered=True)
        await store.event(
            conn, change.alert_id, now, "recovered", actor="elder", channel="device", reason=change.reason
        )
        return Applied(change.alert_id)
    if isinstance(change, Retract):
        await store.update(conn, change.alert_id, recovered=True)
        await store.event(
            conn, change.alert_id, now, "late_cancel", actor="elder", channel="device", reason=change.reason
        )
        await actions.inform(conn, change.alert_id, "retraction", now, detail={"late_cancel": True})
        return Applied(change.alert_id)
    if isinstance(change, Note):
        await store.event(conn, change.alert_id, now, change.event, actor="system", reason=change.reason)
        return Applied(change.alert_id)
    if isinstance(change, Ignore):
        return Applied(None)
    assert_never(change)


async def _open(
    conn: Conn,
    change: Open,
    det: Detection,
    key: str,
    now: int,
    escalation: EscalationConfig,
    elders: Mapping[str, ElderSpec],
) -> Applied:
    policy = select_policy(escalation, change.kind, change.severity)
    elder = elders.get(det.elder_id or "")
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
        return Applied(alert_id, page_now=True)
    device = elder_device(elder) if elder else None
    if device is None:
        return Applied(alert_id)
    ask = Downlink(
        device[0],
        device[1],
        {"cmd": "confirm", "alert": f"A{alert_id}", "timeout_s": policy.confirm_window_s, "vibrate": "are_you_ok"},
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
    return Applied(alert_id, ask=ask)


async def _resolve(conn: Conn, alert_id: int, actor: str, channel: str, outcome: str, reason: str, now: int) -> None:
    alert = await store.by_ref(conn, alert_id)
    if alert is None or alert.state == "resolved":
        return
    await actions.resolve(conn, alert, actor, channel, outcome, reason, now)


def _as_open(row: AlertRow) -> OpenAlert:
    return OpenAlert(row.alert_id, row.kind, row.severity, row.state, row.recovered)
