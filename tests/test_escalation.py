"""The escalation decision, driven by a fake clock: each tier fires on time and never stops early."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from gateway.alerting.escalation import (
    AlertState,
    AlertView,
    Done,
    Fire,
    Step,
    TierFiring,
    Wait,
    deadline,
    next_step,
    quiet_until,
)
from gateway.alerting.policy import DEFAULT_ESCALATION, EscalationConfig, PolicySpec, TierSpec, validate
from gateway.alerting.roster import SHANGHAI
from gateway.domain.detection import Severity

S = 1000  # ms per second
CONFIG = validate(EscalationConfig(quiet_hours="22:00-07:00", on_scene_margin_s=600, default_eta_s=1200))


def policy(*waits: int, start_tiers: int = 1, repeats: tuple[int, ...] = (), quiet: bool = True) -> PolicySpec:
    """Tiers family, grid_worker, post_station, hotline (as many as ``waits``; the last is the hotline)."""
    roles = [*["family", "grid_worker", "post_station"][: len(waits) - 1], "hotline"]
    tiers = [
        TierSpec(roles={role: ["voice"]}, wait_s=wait, repeat=(repeats[i] if i < len(repeats) else 1))
        for i, (role, wait) in enumerate(zip(roles, waits, strict=True))
    ]
    return PolicySpec(name="p", kinds=["*"], start_tiers=start_tiers, respect_quiet_hours=quiet, tiers=tiers)


FOUR = policy(120, 180, 180, 120)
PARALLEL = policy(120, 180, 180, 120, start_tiers=2)


def alert(state: AlertState = "notifying", severity: Severity = "critical", **fields: Any) -> AlertView:
    return AlertView(alert_id=1, kind="sos", severity=severity, state=state, opened_ms=0, **fields)


def fired(*rows: tuple[int, int, int, int]) -> list[TierFiring]:
    """(tier, round, at_s, reached) rows."""
    return [TierFiring(tier, round_, at_s * S, reached) for tier, round_, at_s, reached in rows]


def step(view: AlertView, spec: PolicySpec, log: list[TierFiring], now_s: float, **kw: Any) -> Step:
    return next_step(view, spec, log, int(now_s * S), escalation=CONFIG, **kw)


def walk(
    view: AlertView,
    spec: PolicySpec,
    pages: int,
    reached: Callable[[int], int] = lambda tier: 1,
    log: list[TierFiring] | None = None,
    now_ms: int = 0,
) -> list[tuple[float, tuple[int, ...], int]]:
    """Run the engine loop on a fake clock: (seconds, tiers, round) of each page, checking 1 ms before."""
    log = list(log or [])
    pages_seen: list[tuple[float, tuple[int, ...], int]] = []
    while len(pages_seen) < pages:
        result = next_step(view, spec, log, now_ms, escalation=CONFIG)
        if isinstance(result, Wait):
            assert result.until_ms > now_ms, result
            early = next_step(view, spec, log, result.until_ms - 1, escalation=CONFIG)
            assert isinstance(early, Wait) and early.until_ms == result.until_ms, early
            now_ms = result.until_ms
            continue
        assert isinstance(result, Fire), result
        assert result.reason
        pages_seen.append((now_ms / S, result.tiers, result.round))
        log += [TierFiring(tier, result.round, now_ms, reached(tier)) for tier in result.tiers]
        if view.state == "confirming":
            view = dataclasses.replace(view, state="notifying")
    return pages_seen


def test_each_tier_fires_at_its_time_and_not_a_millisecond_before() -> None:
    assert walk(alert(), FOUR, 6) == [
        (0, (0,), 1),
        (120, (1,), 1),
        (300, (2,), 1),
        (480, (3,), 1),
        (600, (3,), 2),
        (720, (3,), 3),
    ]


def test_parallel_start_fires_the_first_tiers_together_and_waits_on_the_highest() -> None:
    assert walk(alert(), PARALLEL, 3) == [(0, (0, 1), 1), (180, (2,), 1), (360, (3,), 1)]


def test_a_tier_repeats_before_moving_on() -> None:
    assert walk(alert(), policy(120, 180, 60, repeats=(2, 3)), 7) == [
        (0, (0,), 1),
        (120, (0,), 2),
        (240, (1,), 1),
        (420, (1,), 2),
        (600, (1,), 3),
        (780, (2,), 1),
        (840, (2,), 2),
    ]


def test_the_last_tier_repeats_forever() -> None:
    pages = walk(alert(), policy(60, 120), 7)
    assert pages[1:] == [(60 + 120 * i, (1,), i + 1) for i in range(6)]
    # and after a thousand rounds it still does
    result = step(alert(), policy(60, 120), fired((0, 1, 0, 1), (1, 1000, 10_000_000, 1)), 10_000_120)
    assert isinstance(result, Fire) and (result.tiers, result.round) == ((1,), 1001)


def test_a_tier_whose_role_resolved_to_nobody_is_skipped_at_once() -> None:
    # grid worker (tier 1) and post station (tier 2) on duty: nobody, so the hotline is paged at 120 s
    pages = walk(alert(), FOUR, 3, reached=lambda tier: 0 if tier in (1, 2) else 1)
    assert pages == [(0, (0,), 1), (120, (1,), 1), (120, (2,), 1)]
    assert walk(alert(), FOUR, 4, reached=lambda tier: 0 if tier in (1, 2) else 1)[3] == (120, (3,), 1)
    result = step(alert(), FOUR, fired((0, 1, 0, 1), (1, 1, 120, 0)), 120)
    assert isinstance(result, Fire) and result.tiers == (2,) and "reached nobody" in result.reason


def test_a_final_tier_that_reached_nobody_is_retried_at_its_pace_not_in_a_tight_loop() -> None:
    pages = walk(alert(), policy(60, 120), 4, reached=lambda tier: 0)
    assert pages == [(0, (0,), 1), (0, (1,), 1), (120, (1,), 2), (240, (1,), 3)]


LATE = "responder not on scene by ETA + margin"
ACK = alert("acknowledged", acknowledged_ms=130 * S)
ACK_ETA = alert("acknowledged", acknowledged_ms=130 * S, eta_ms=400 * S)


@pytest.mark.parametrize(
    ("view", "log", "now_s", "expected", "why"),
    [
        # acknowledged without an ETA: default ETA 1200 s + margin 600 s after the acknowledgement
        (ACK, fired((0, 1, 0, 1), (1, 1, 120, 1)), 131, Wait(1930 * S, ""), "taken; waiting"),
        (ACK, fired((0, 1, 0, 1), (1, 1, 120, 1)), 1929.999, Wait(1930 * S, ""), "taken; waiting"),
        (ACK, fired((0, 1, 0, 1), (1, 1, 120, 1)), 1930, Fire((2,), 1, ""), LATE),
        # with an ETA: ETA + margin
        (ACK_ETA, fired((0, 1, 0, 1)), 999, Wait(1000 * S, ""), "taken; waiting"),
        (ACK_ETA, fired((0, 1, 0, 1)), 1000, Fire((1,), 1, ""), LATE),
        # taken from the hotline, not there in time: the hotline again
        (
            alert("acknowledged", acknowledged_ms=500 * S, eta_ms=600 * S),
            fired((0, 1, 0, 1), (3, 2, 480, 1)),
            1200,
            Fire((3,), 3, ""),
            LATE,
        ),
        # once escalation resumed, it follows the new pages
        (ACK_ETA, fired((0, 1, 0, 1), (1, 1, 1000, 1)), 1000, Wait(1180 * S, ""), "waiting 180 s"),
        (ACK_ETA, fired((0, 1, 0, 1), (1, 1, 1000, 1)), 1180, Fire((2,), 1, ""), "tier 2 (grid_worker)"),
        # a new ETA moves the deadline past pages made after the old one
        (
            alert("acknowledged", acknowledged_ms=1100 * S, eta_ms=2000 * S),
            fired((0, 1, 0, 1), (1, 1, 1000, 1)),
            1180,
            Wait(2600 * S, ""),
            "taken; waiting",
        ),
        # taken before anything was paged (e.g. from the dashboard)
        (alert("acknowledged", acknowledged_ms=0, eta_ms=0), [], 600, Fire((0,), 1, ""), LATE),
        # on scene and resolved: nothing more to do, whatever the log says
        (alert("on_scene"), fired((0, 1, 0, 1)), 10_000, Done(""), "responder on scene"),
        (alert("resolved"), fired((3, 9, 0, 1)), 10_000, Done(""), "alert resolved"),
    ],
)
def test_after_acknowledgement(view: AlertView, log: list[TierFiring], now_s: float, expected: Step, why: str) -> None:
    result = step(view, FOUR, log, now_s)
    assert dataclasses.replace(result, reason="") == expected
    assert result.reason.startswith(why), result.reason


def test_an_acknowledgement_stops_the_remaining_tiers() -> None:
    log = fired((0, 1, 0, 1), (1, 1, 120, 1))
    taken = alert("acknowledged", acknowledged_ms=150 * S, eta_ms=300 * S)
    for now_s in (300, 480, 899):  # tier 2 was due at 300 s; nothing fires until ETA + margin (900 s)
        result = step(taken, FOUR, log, now_s)
        assert isinstance(result, Wait) and result.until_ms == 900 * S


@pytest.mark.parametrize(
    ("view", "spec", "now_s", "expected"),
    [
        (alert("confirming", confirm_until_ms=60 * S), FOUR, 0, Wait(60 * S, "")),
        (alert("confirming", confirm_until_ms=60 * S), FOUR, 59.999, Wait(60 * S, "")),
        (alert("confirming", confirm_until_ms=60 * S), FOUR, 60, Fire((0,), 1, "")),
        (alert("confirming", confirm_until_ms=60 * S), PARALLEL, 61, Fire((0, 1), 1, "")),
        (alert("confirming", confirm_until_ms=None), PARALLEL, 0, Fire((0, 1), 1, "")),
    ],
)
def test_confirming_window(view: AlertView, spec: PolicySpec, now_s: float, expected: Step) -> None:
    result = step(view, spec, [], now_s)
    assert dataclasses.replace(result, reason="") == dataclasses.replace(expected, reason="")
    assert result.reason


def test_confirming_then_paging_on_the_fake_clock() -> None:
    pages = walk(alert("confirming", confirm_until_ms=60 * S), PARALLEL, 2)
    assert pages == [(60, (0, 1), 1), (240, (2,), 1)]


QUIET_END = 7 * 3600 * S


@pytest.mark.parametrize(
    ("severity", "spec", "log", "now_s", "kw", "expected"),
    [
        ("warning", FOUR, [], 0, {"quiet_until_ms": QUIET_END}, Wait(QUIET_END, "")),
        ("warning", FOUR, fired((0, 1, 0, 1)), 120, {"quiet_until_ms": QUIET_END}, Wait(QUIET_END, "")),
        ("info", FOUR, [], 0, {"quiet_until_ms": QUIET_END}, Wait(QUIET_END, "")),
        ("critical", FOUR, [], 0, {"quiet_until_ms": QUIET_END}, Fire((0,), 1, "")),
        ("critical", FOUR, fired((0, 1, 0, 1)), 120, {"quiet": True}, Fire((1,), 1, "")),
        # a policy may page warnings in quiet hours (e.g. the elder pressed "call")
        ("warning", policy(120, 120, quiet=False), [], 0, {"quiet_until_ms": QUIET_END}, Fire((0,), 1, "")),
        # waits are not changed, and quiet hours that have ended hold nothing
        ("warning", FOUR, fired((0, 1, 0, 1)), 60, {"quiet_until_ms": QUIET_END}, Wait(120 * S, "")),
        ("warning", FOUR, [], 0, {"quiet_until_ms": 0}, Fire((0,), 1, "")),
        ("warning", FOUR, [], 0, {}, Fire((0,), 1, "")),
    ],
)
def test_quiet_hours_hold_warnings_but_never_criticals(
    severity: Severity, spec: PolicySpec, log: list[TierFiring], now_s: float, kw: dict[str, Any], expected: Step
) -> None:
    result = step(alert(severity=severity), spec, log, now_s, **kw)
    assert dataclasses.replace(result, reason="") == dataclasses.replace(expected, reason="")
    if isinstance(result, Wait) and result.until_ms == QUIET_END:
        assert result.reason.startswith(f"quiet hours: {severity} alert held")


def _ms(when: datetime) -> int:
    return int(when.timestamp() * S)


def test_quiet_flag_holds_until_the_configured_window_ends() -> None:
    night = _ms(datetime(2025, 1, 6, 23, 30, tzinfo=SHANGHAI))
    morning = _ms(datetime(2025, 1, 7, 7, 0, tzinfo=SHANGHAI))
    result = next_step(alert(severity="warning"), FOUR, [], night, escalation=CONFIG, quiet=True)
    assert result == Wait(morning, result.reason)
    result = next_step(alert(severity="warning"), FOUR, [], morning, escalation=CONFIG, quiet=False)
    assert isinstance(result, Fire) and result.tiers == (0,)


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (datetime(2025, 1, 6, 23, 30, tzinfo=SHANGHAI), datetime(2025, 1, 7, 7, 0, tzinfo=SHANGHAI)),
        (datetime(2025, 1, 7, 6, 59, 59, tzinfo=SHANGHAI), datetime(2025, 1, 7, 7, 0, tzinfo=SHANGHAI)),
        (datetime(2025, 1, 7, 7, 0, tzinfo=SHANGHAI), None),
        (datetime(2025, 1, 7, 12, 0, tzinfo=SHANGHAI), None),
    ],
)
def test_quiet_until(when: datetime, expected: datetime | None) -> None:
    assert quiet_until(DEFAULT_ESCALATION, _ms(when)) == (None if expected is None else _ms(expected))
    assert quiet_until(EscalationConfig(), _ms(when)) is None  # no quiet hours configured


def test_deadline() -> None:
    assert deadline(Wait(5, "x")) == 5
    assert deadline(Fire((0,), 1, "x")) is None
    assert deadline(Done("x")) is None


@pytest.mark.parametrize(
    ("view", "spec", "log", "now_s", "expected"),
    [
        # a start tier missing from the log (a crash mid-page) is paged at once
        (alert(), PARALLEL, fired((0, 1, 0, 1)), 1, Fire((1,), 1, "")),
        # the config lost a tier since the alert was paged: carry on with the last tier
        (alert(), policy(60, 120), fired((0, 1, 0, 1), (3, 2, 100, 1)), 220, Fire((1,), 3, "")),
        # the latest round decides, even if clocks disagree on the order
        (alert(), FOUR, fired((3, 4, 900, 1), (3, 3, 950, 1)), 1020, Fire((3,), 5, "")),
        # a confirming alert whose pages are already logged follows the log
        (alert("confirming", confirm_until_ms=10**9), FOUR, fired((0, 1, 0, 1)), 120, Fire((1,), 1, "")),
    ],
)
def test_inconsistent_inputs_still_escalate(
    view: AlertView, spec: PolicySpec, log: list[TierFiring], now_s: float, expected: Step
) -> None:
    assert dataclasses.replace(step(view, spec, log, now_s), reason="") == expected


def test_default_policies_walk_to_the_hotline() -> None:
    for sos in DEFAULT_ESCALATION.policies:
        pages = walk(alert(), sos, len(sos.tiers) - sos.start_tiers + 3)
        last = len(sos.tiers) - 1
        assert pages[0][1] == tuple(range(sos.start_tiers)), sos.name
        assert [p[1] for p in pages[-3:]] == [(last,)] * 3, sos.name
