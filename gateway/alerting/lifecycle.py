"""How one detection changes the alerts of an elder: a pure decision, tested by table.

An alert is keyed by elder (or, for a device bound to no elder, the device) and alert
kind; a detection whose key is open updates that alert instead of opening another.
Which kinds may close by themselves is decided here, once:

* SOS, call and fall are never auto-resolved: a person must close them. The only
  exception is the elder's own cancel while the alert is still asking them
  ("are you OK?"): that is a false alarm by the elder's word.
* A fall followed by movement while paging is not resolved either, but escalation
  stops at the tiers already paged (``MarkRecovered``).
* A cancel after the grace period (``cancel_late``) sends everyone already paged a
  short retraction and stops further tiers, but leaves the alert for a person to
  close: someone should still check.
* Everything else (geofence exit, vitals, device health, inactivity) resolves
  automatically when its detector reports the condition cleared.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.domain.detection import (
    CALL,
    CANCEL,
    CANCEL_LATE,
    FALL,
    FALL_NO_RECOVERY,
    SEVERITY_LEVEL,
    SOS,
    Detection,
    Severity,
)

ALERT_KIND: dict[str, str] = {FALL_NO_RECOVERY: FALL}  # detection kind -> alert kind


def retracted_kind(det: Detection) -> str:
    """The alert a late cancel is about (its evidence names it: ``of``)."""
    return str(det.evidence.get("of") or SOS)


NEVER_AUTO_RESOLVE: frozenset[str] = frozenset({SOS, CALL, FALL})


def alert_kind(detection_kind: str) -> str:
    return ALERT_KIND.get(detection_kind, detection_kind)


def alert_key(elder_id: str | None, device_id: str, kind: str) -> str:
    owner = elder_id if elder_id is not None else f"device:{device_id}"
    return f"{owner}:{kind}"


@dataclass(frozen=True, slots=True)
class OpenAlert:
    """What the decision needs to know about an alert that is not resolved."""

    alert_id: int
    kind: str
    severity: Severity
    state: str
    recovered: bool = False


@dataclass(frozen=True, slots=True)
class Open:
    kind: str
    severity: Severity
    reason: str


@dataclass(frozen=True, slots=True)
class Update:
    alert_id: int
    severity: Severity
    worse: bool  # the severity rose: the policy may change and confirmation ends
    reason: str


@dataclass(frozen=True, slots=True)
class Resolve:
    alert_id: int
    actor: str
    outcome: str
    reason: str


@dataclass(frozen=True, slots=True)
class MarkRecovered:
    alert_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class Note:
    alert_id: int
    event: str
    reason: str


@dataclass(frozen=True, slots=True)
class Retract:
    """A late cancel: tell everyone paged it may be a mistake, page nobody new; a person closes it."""

    alert_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class Ignore:
    reason: str


Change = Open | Update | Resolve | MarkRecovered | Note | Retract | Ignore


def on_detection(det: Detection, current: OpenAlert | None) -> Change:
    """The change one detection makes to the open alert of its key (if any)."""
    kind = alert_kind(det.kind)
    if det.kind == CANCEL_LATE:
        if current is None:
            return Ignore("late cancel with no open alert")
        return Retract(
            current.alert_id, f"the elder cancelled {det.evidence.get('cancelled_after_s')} s after pressing"
        )
    if det.cleared:
        if current is None:
            return Ignore(f"{kind} cleared, no open alert")
        if det.evidence.get("withdrawn"):
            return Resolve(current.alert_id, "elder", "false_alarm", "cancelled by the elder within the grace period")
        if kind in NEVER_AUTO_RESOLVE:
            if current.state == "confirming":
                return Resolve(
                    current.alert_id,
                    "elder",
                    "false_alarm",
                    "the elder moved or cancelled while being asked if they are OK",
                )
            if kind == FALL and not current.recovered:
                return MarkRecovered(current.alert_id, "the elder is moving again: no further tiers will be paged")
            return Note(current.alert_id, "condition_cleared", f"{kind} cleared; a person must close this alert")
        return Resolve(current.alert_id, "system", "condition_cleared", f"{det.kind} cleared: {_brief(det)}")
    if current is None:
        return Open(kind, det.severity, f"{det.kind} detected: {_brief(det)}")
    worse = SEVERITY_LEVEL[det.severity] > SEVERITY_LEVEL[current.severity]
    severity: Severity = det.severity if worse else current.severity
    return Update(current.alert_id, severity, worse, f"{det.kind} again{' and worse' if worse else ''}: {_brief(det)}")


def on_cancel(open_alerts: list[OpenAlert]) -> list[Change]:
    """The elder pressed cancel: every alert still asking them is a false alarm."""
    return [
        Resolve(a.alert_id, "elder", "false_alarm", "the elder pressed cancel while being asked")
        for a in open_alerts
        if a.state == "confirming"
    ]


def is_cancel(det: Detection) -> bool:
    return det.kind == CANCEL


def _brief(det: Detection) -> str:
    parts = [f"{k}={v}" for k, v in det.evidence.items() if isinstance(v, int | float | str | bool)]
    return ", ".join(parts[:4]) or det.severity
