"""The escalation decision: given an alert, its policy and what was paged so far, what now?

:func:`next_step` is pure: the engine passes the clock (``now_ms``) and the audit log
of past pages (``fired``), stores the answer, and asks again at :func:`deadline`.
Rounds count per tier: a tier's first page is round 1, its first repeat round 2. The
highest tier paged so far is the one being waited on; its most recent page decides.
The last tier repeats until someone acknowledges, so no alert stops escalating.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, TypeAlias

from gateway.alerting.policy import EscalationConfig, PolicySpec
from gateway.alerting.roster import in_window, next_window_end
from gateway.domain.detection import Severity

AlertState = Literal["confirming", "notifying", "acknowledged", "on_scene", "resolved"]


@dataclass(frozen=True, slots=True)
class AlertView:
    """What the engine knows about one alert."""

    alert_id: int
    kind: str
    severity: Severity  # worst so far
    state: AlertState
    opened_ms: int
    confirm_until_ms: int | None = None  # set while confirming
    acknowledged_ms: int | None = None
    eta_ms: int | None = None  # when the responder who took it expects to arrive


@dataclass(frozen=True, slots=True)
class TierFiring:
    """One past page of one tier, from the audit log."""

    tier: int  # index into policy.tiers, from 0
    round: int  # 1 the first time this tier fired, 2 for its first repeat, ...
    at_ms: int
    reached: int  # recipients reached; 0 when the role resolved to nobody


@dataclass(frozen=True, slots=True)
class Wait:
    until_ms: int
    reason: str


@dataclass(frozen=True, slots=True)
class Fire:
    tiers: tuple[int, ...]
    round: int
    reason: str


@dataclass(frozen=True, slots=True)
class Done:
    reason: str


Step: TypeAlias = Wait | Fire | Done


def deadline(step: Step) -> int | None:
    """When the engine should ask again: a Wait's end; a Fire is due now; Done never."""
    return step.until_ms if isinstance(step, Wait) else None


def _window_end_ms(window: str, now_ms: int, escalation: EscalationConfig) -> int:
    at = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    return int(next_window_end(window, at, tz=escalation.zone).timestamp() * 1000)


def quiet_until(escalation: EscalationConfig, now_ms: int) -> int | None:
    """End of the quiet hours ``now_ms`` falls in, or None outside them (or with none configured)."""
    window = escalation.quiet_hours
    at = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    if window is None or not in_window(window, at, tz=escalation.zone):
        return None
    return _window_end_ms(window, now_ms, escalation)


def _label(policy: PolicySpec, tier: int) -> str:
    return f"tier {tier + 1} ({', '.join(policy.tiers[tier].roles)})"


def _labels(policy: PolicySpec, tiers: Sequence[int]) -> str:
    return " and ".join(_label(policy, tier) for tier in tiers)


def _start(policy: PolicySpec, why: str) -> Fire:
    tiers = tuple(range(policy.start_tiers))
    return Fire(tiers, 1, f"{why}; paging {_labels(policy, tiers)}")


def _latest(fired: Sequence[TierFiring], last: int) -> tuple[int, TierFiring]:
    """The highest tier paged so far (clamped to the policy, should it have shrunk) and its latest page."""
    top = max(firing.tier for firing in fired)
    # by round first: the next round must be new, or the engine's insert would be a no-op (and loop)
    latest = max((f for f in fired if f.tier == top), key=lambda f: (f.round, f.at_ms))
    return min(top, last), latest


def _onward(policy: PolicySpec, tier: int, round_: int, why: str) -> Fire:
    """The page after ``tier``: the next tier, or the last tier again."""
    last = len(policy.tiers) - 1
    if tier < last:
        return Fire((tier + 1,), 1, f"{why}; escalating to {_label(policy, tier + 1)}")
    return Fire(
        (last,),
        round_ + 1,
        f"{why}; repeating final {_label(policy, last)}, round {round_ + 1}, until someone takes it",
    )


def _notifying(policy: PolicySpec, fired: Sequence[TierFiring], now_ms: int) -> Step:
    if not fired:
        return _start(policy, "nothing paged yet")
    last = len(policy.tiers) - 1
    tier, latest = _latest(fired, last)
    if tier < policy.start_tiers - 1:  # a start tier was not recorded (e.g. a crash mid-page)
        missing = tuple(range(tier + 1, policy.start_tiers))
        return Fire(missing, 1, f"start tiers not all paged; paging {_labels(policy, missing)}")
    spec = policy.tiers[tier]
    label = _label(policy, tier)
    wait_ms = spec.wait_s * 1000
    if latest.reached == 0:
        if tier < last:
            return _onward(policy, tier, latest.round, f"{label} reached nobody")
        if now_ms < latest.at_ms + wait_ms:  # retry at the tier's pace rather than in a tight loop
            return Wait(latest.at_ms + wait_ms, f"final {label} reached nobody; retrying after {spec.wait_s} s")
        return _onward(policy, tier, latest.round, f"final {label} reached nobody")
    if now_ms < latest.at_ms + wait_ms:
        return Wait(
            latest.at_ms + wait_ms,
            f"waiting {spec.wait_s} s for someone paged by {label} round {latest.round} to take it",
        )
    why = f"{label} round {latest.round} not taken within {spec.wait_s} s"
    if latest.round < spec.repeat and tier < last:
        return Fire((tier,), latest.round + 1, f"{why}; repeating it, round {latest.round + 1} of {spec.repeat}")
    return _onward(policy, tier, latest.round, why)


def _acknowledged(
    alert: AlertView, policy: PolicySpec, fired: Sequence[TierFiring], now_ms: int, escalation: EscalationConfig
) -> Step:
    taken_ms = alert.acknowledged_ms if alert.acknowledged_ms is not None else alert.opened_ms
    eta_ms = alert.eta_ms if alert.eta_ms is not None else taken_ms + escalation.default_eta_s * 1000
    due_ms = eta_ms + escalation.on_scene_margin_s * 1000
    if now_ms < due_ms:
        return Wait(due_ms, f"taken; waiting for the responder on scene by ETA + {escalation.on_scene_margin_s} s")
    why = "responder not on scene by ETA + margin"
    if any(firing.at_ms >= due_ms for firing in fired):  # escalation already resumed: carry on
        return _notifying(policy, fired, now_ms)
    if not fired:
        return _start(policy, why)
    tier, latest = _latest(fired, len(policy.tiers) - 1)
    return _onward(policy, tier, latest.round, why)


def next_step(
    alert: AlertView,
    policy: PolicySpec,
    fired: Sequence[TierFiring],
    now_ms: int,
    *,
    escalation: EscalationConfig,
    quiet: bool = False,
    quiet_until_ms: int | None = None,
) -> Step:
    """What to do about ``alert`` at ``now_ms``, and why.

    In quiet hours (``quiet``, or ``quiet_until_ms`` = their end as from :func:`quiet_until`)
    a page for a non-critical alert under a policy that respects quiet hours is held
    until they end. Critical alerts are never held.
    """
    if quiet and quiet_until_ms is None and escalation.quiet_hours is not None:
        quiet_until_ms = _window_end_ms(escalation.quiet_hours, now_ms, escalation)
    if alert.state == "resolved":
        return Done("alert resolved")
    if alert.state == "on_scene":
        return Done("responder on scene")
    step: Step
    if alert.state == "acknowledged":
        step = _acknowledged(alert, policy, fired, now_ms, escalation)
    elif alert.state == "confirming" and not fired:
        if alert.confirm_until_ms is not None and now_ms < alert.confirm_until_ms:
            return Wait(alert.confirm_until_ms, 'asking the elder "are you OK?" before paging anyone')
        step = _start(policy, 'the elder did not answer "are you OK?" in time')
    else:  # notifying, or confirming with pages already logged: follow the log
        step = _notifying(policy, fired, now_ms)
    if (
        isinstance(step, Fire)
        and alert.severity != "critical"
        and policy.respect_quiet_hours
        and quiet_until_ms is not None
        and quiet_until_ms > now_ms
    ):
        return Wait(quiet_until_ms, f"quiet hours: {alert.severity} alert held until they end (then: {step.reason})")
    return step
