"""Deciding expectations: given what was observed by scenario time ``settled_s``, pass, fail or wait.

:func:`judge` is pure. An expectation is decided as soon as the observations settle
it: something that must happen in a window passes when it has happened inside it and
fails when it happened outside it or the window closed without it; something that
must not happen fails the moment it does and passes when its window closes. Counts
with an upper bound wait for the window to close. Messages say what was expected and
what was seen, in scenario time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from simulators.scenario.accel import WINDOW_S as ACCEL_WINDOW_S
from simulators.scenario.observe import AlertSeen, NotificationSeen, Observed
from simulators.scenario.plan import Expectation
from simulators.scenario.timespec import format_duration as fmt

Status = Literal["pass", "fail", "pending"]


@dataclass(frozen=True, slots=True)
class Verdict:
    status: Status
    detail: str


def _pass(detail: str) -> Verdict:
    return Verdict("pass", detail)


def _fail(detail: str) -> Verdict:
    return Verdict("fail", detail)


PENDING = Verdict("pending", "")


def _closed(e: Expectation, obs: Observed, final: bool) -> bool:
    return final or obs.settled_s >= e.window.hi


def _outside(e: Expectation, t: float) -> bool:
    return t < e.window.lo - 1e-6 or t > e.window.hi + 1e-6


def _expected(e: Expectation) -> str:
    return f"expected {e.window.describe()}" if e.window.lo > 0 or math.isfinite(e.window.hi) else ""


def _alerts(e: Expectation, obs: Observed) -> list[AlertSeen]:
    sel = e.alert
    assert sel is not None
    return [
        a
        for a in obs.alerts
        if (sel.elder is None or a.elder_id == sel.elder)
        and (sel.kind is None or a.kind == sel.kind)
        and (sel.severity is None or a.severity == sel.severity)
    ]


def describe(e: Expectation) -> str:
    """The expectation in a few words (for reports)."""
    if e.alert is not None:
        subject = f"alert {e.alert.describe()}"
        text = {
            "opened": f"{subject} opened",
            "no_alert": f"no {subject}",
            "tier_reached": f"tier {e.tier} reached for {subject}",
            "no_tier_beyond": f"no tier beyond {e.tier} for {subject}",
            "notified": f"{e.recipients.describe() if e.recipients else ''} notified about {subject}",
            "not_notified": f"{e.recipients.describe() if e.recipients else ''} not notified about {subject}",
            "retraction": f"retraction to everyone paged about {subject}",
            "acknowledged": f"{subject} acknowledged{f' by {e.by}' if e.by else ''}",
            "resolved": f"{subject} resolved{f' ({e.outcome})' if e.outcome else ''}{f' by {e.by}' if e.by else ''}",
        }[e.check]
    elif e.detection is not None:
        text = ("no " if e.check == "no_detection" else "") + e.detection.describe()
    else:
        assert e.notifications is not None
        text = e.notifications.describe()
    if e.count_given:
        text += f", count {e.count.describe()}"
    if e.window.lo > 0 or math.isfinite(e.window.hi):
        text += f", {e.window.describe()}"
    return text


def judge(e: Expectation, obs: Observed, final: bool = False) -> Verdict:
    check = e.check
    closed = _closed(e, obs, final)
    if check in ("detection", "no_detection"):
        # detections carry device time, and a band's acceleration window reports up to its length back
        closed = final or obs.settled_s >= e.window.hi + ACCEL_WINDOW_S
    if check in ("opened", "no_alert"):
        return _opened(e, obs, closed)
    if check in ("tier_reached", "no_tier_beyond"):
        return _tiers(e, obs, closed)
    if check in ("notified", "not_notified"):
        return _notified(e, obs, closed)
    if check == "retraction":
        return _retraction(e, obs, closed)
    if check in ("acknowledged", "resolved"):
        return _taken_or_closed(e, obs, closed)
    if check in ("detection", "no_detection"):
        return _detections(e, obs, closed)
    return _notification_count(e, obs, closed)


def _counted(e: Expectation, what: str, times: list[tuple[str, float]], closed: bool) -> Verdict:
    """``times``: (label, when) of each thing seen; each must be in the window, their number in range."""
    for label, t in times:
        if _outside(e, t):
            return _fail(f"{label} at {fmt(t)}, {_expected(e)}")
    n = len(times)
    if n > e.count.hi:
        return _fail(f"{n} {what}, expected {e.count.describe()}")
    if n >= e.count.lo and (e.count.hi == math.inf or closed):
        first = f" (first at {fmt(min(t for _, t in times))})" if times else ""
        return _pass(f"{n} {what}{first}")
    if closed:
        return _fail(f"{n} {what} by {fmt(e.window.hi)}, expected {e.count.describe()}")
    return PENDING


def _opened(e: Expectation, obs: Observed, closed: bool) -> Verdict:
    assert e.alert is not None
    found = [(a, a.since_s(e.alert.severity)) for a in _alerts(e, obs)]
    if e.check == "no_alert":
        inside = [(a, t) for a, t in found if not _outside(e, t)]
        if inside:
            a, t = inside[0]
            return _fail(f"{a.label()} opened at {fmt(t)}")
        return _pass("none opened") if closed else PENDING
    return _counted(e, f"alert(s) {e.alert.describe()}", [(f"{a.label()} opened", t) for a, t in found], closed)


def _detections(e: Expectation, obs: Observed, closed: bool) -> Verdict:
    sel = e.detection
    assert sel is not None
    cleared = bool(sel.cleared)
    found = [
        d
        for d in obs.detections
        if (sel.elder is None or d.elder_id == sel.elder)
        and (sel.kind is None or d.kind == sel.kind)
        and (sel.severity is None or d.severity == sel.severity)
        and d.cleared == cleared
    ]
    if e.check == "no_detection":
        inside = [d for d in found if not _outside(e, d.at_s)]
        if inside:
            d = inside[0]
            return _fail(
                f"{d.kind}{' cleared' if d.cleared else ''} ({d.severity}) of {d.elder_id} detected at {fmt(d.at_s)}"
            )
        return _pass("none detected") if closed else PENDING
    return _counted(e, "detection(s)", [(f"{d.kind} of {d.elder_id} detected", d.at_s) for d in found], closed)


def _each_alert(
    e: Expectation, obs: Observed, closed: bool, verdicts: Iterable[tuple[AlertSeen, Verdict]], n_alerts: int
) -> Verdict:
    """Combine per-alert verdicts: any fail fails; pass when enough alerts passed."""
    passed: list[Verdict] = []
    waiting: list[Verdict] = []
    for _, v in verdicts:
        if v.status == "fail":
            return v
        (passed if v.status == "pass" else waiting).append(v)
    assert e.alert is not None
    if n_alerts == 0:
        return _fail(f"no alert {e.alert.describe()} opened by {fmt(e.window.hi)}") if closed else PENDING
    if n_alerts > e.count.hi:
        return _fail(f"{n_alerts} alerts {e.alert.describe()}, expected {e.count.describe()}")
    if not waiting and len(passed) >= e.count.lo and (e.count.hi == math.inf or closed):
        return passed[0] if len(passed) == 1 else _pass(f"{len(passed)} alerts: {passed[0].detail}")
    if closed:
        if waiting and waiting[0].detail:
            return _fail(waiting[0].detail)
        return _fail(f"{len(passed)} alerts {e.alert.describe()} by {fmt(e.window.hi)}, expected {e.count.describe()}")
    return PENDING


def _tiers(e: Expectation, obs: Observed, closed: bool) -> Verdict:
    assert e.tier is not None
    tier = e.tier
    alerts = _alerts(e, obs)
    by_alert: dict[int, list[tuple[int, float, int]]] = {}
    for f in obs.firings:
        by_alert.setdefault(f.alert_id, []).append((f.tier, f.at_s, f.reached))

    def one(a: AlertSeen) -> Verdict:
        fired = sorted(by_alert.get(a.alert_id, []), key=lambda x: x[1])
        highest = max(fired, default=None)
        seen = f"highest: tier {highest[0] + 1} at {fmt(highest[1])}" if highest else "nobody paged"
        if e.check == "no_tier_beyond":
            beyond = [(t, at) for t, at, _ in fired if t >= tier and not _outside(e, at)]
            if beyond:
                above, at = beyond[0]
                return _fail(f"tier {above + 1} of {a.label()} paged at {fmt(at)}")
            return _pass(f"{a.label()}: {seen}") if closed else Verdict("pending", "")
        wanted = [(at, reached) for t, at, reached in fired if t == tier - 1]
        if wanted and _outside(e, wanted[0][0]):  # the first page of the tier is what counts
            return _fail(f"tier {tier} of {a.label()} reached at {fmt(wanted[0][0])}, {_expected(e)}")
        if wanted and not any(reached for _, reached in wanted):
            return _fail(f"tier {tier} of {a.label()} fired at {fmt(wanted[0][0])} but reached nobody")
        if wanted:
            return _pass(f"tier {tier} of {a.label()} reached at {fmt(wanted[0][0])}")
        return Verdict("pending", f"tier {tier} of {a.label()} not reached by {fmt(e.window.hi)} ({seen})")

    return _each_alert(e, obs, closed, ((a, one(a)) for a in alerts), len(alerts))


def _pages(obs: Observed, alert_id: int, purpose: str = "page") -> list[NotificationSeen]:
    return [n for n in obs.notifications if n.alert_id == alert_id and n.purpose == purpose]


def _notified(e: Expectation, obs: Observed, closed: bool) -> Verdict:
    r = e.recipients
    assert r is not None
    alerts = _alerts(e, obs)
    by_alert: dict[int, list[NotificationSeen]] = {}
    for n in obs.notifications:
        if n.purpose == "page":
            by_alert.setdefault(n.alert_id, []).append(n)

    def relevant(n: NotificationSeen) -> bool:
        return (
            (r.tier is None or n.tier == r.tier - 1)
            and (not r.phones or n.phone in r.phones)
            and (r.role is None or n.role == r.role)
        )

    def one(a: AlertSeen) -> Verdict:
        pages = [n for n in by_alert.get(a.alert_id, []) if relevant(n)]
        if e.check == "not_notified":
            sent = [
                n
                for n in pages
                if n.sent_s is not None and (not r.channels or n.channel in r.channels) and not _outside(e, n.sent_s)
            ]
            if sent:
                n = sent[0]
                return _fail(f"{n.name} ({n.role}) got a {n.channel} page about {a.label()} at {fmt(n.sent_s or 0)}")
            return _pass(f"{r.describe()}: nothing about {a.label()}") if closed else Verdict("pending", "")
        phones = set(r.phones) if r.phones else {n.phone for n in pages}
        names = {n.phone: n.name for n in pages}
        if not phones:
            return Verdict("pending", f"{r.describe()}: not paged about {a.label()} by {fmt(e.window.hi)}")
        last = 0.0
        for phone in sorted(phones):
            mine = [n for n in pages if n.phone == phone and n.sent_s is not None]
            for channel in r.channels or (None,):
                times = [n.sent_s for n in mine if channel is None or n.channel == channel]
                who = names.get(phone, r.person or phone)
                if not times:
                    how = f"by {channel}" if channel else "at all"
                    return Verdict("pending", f"{who} not paged {how} about {a.label()} by {fmt(e.window.hi)}")
                t = min(x for x in times if x is not None)
                if _outside(e, t):
                    return _fail(
                        f"{who} paged{f' by {channel}' if channel else ''} about {a.label()} at "
                        f"{fmt(t)}, {_expected(e)}"
                    )
                last = max(last, t)
        return _pass(f"{len(phones)} recipient(s) paged about {a.label()} by {fmt(last)}")

    return _each_alert(e, obs, closed, ((a, one(a)) for a in alerts), len(alerts))


def _retraction(e: Expectation, obs: Observed, closed: bool) -> Verdict:
    alerts = _alerts(e, obs)

    def one(a: AlertSeen) -> Verdict:
        paged = {n.phone: n.name for n in _pages(obs, a.alert_id)}
        if not paged:
            return Verdict("pending", f"nobody was paged about {a.label()}, so there was nothing to retract")
        retractions = _pages(obs, a.alert_id, "retraction")
        last = 0.0
        for phone, name in sorted(paged.items()):
            times = [n.sent_s for n in retractions if n.phone == phone and n.sent_s is not None]
            if not times:
                return Verdict("pending", f"{name} got no retraction about {a.label()} by {fmt(e.window.hi)}")
            t = min(x for x in times if x is not None)
            if _outside(e, t):
                return _fail(f"retraction to {name} about {a.label()} at {fmt(t)}, {_expected(e)}")
            last = max(last, t)
        return _pass(f"retraction to all {len(paged)} paged about {a.label()} by {fmt(last)}")

    return _each_alert(e, obs, closed, ((a, one(a)) for a in alerts), len(alerts))


def _taken_or_closed(e: Expectation, obs: Observed, closed: bool) -> Verdict:
    alerts = _alerts(e, obs)
    acked = e.check == "acknowledged"

    def one(a: AlertSeen) -> Verdict:
        t = a.acknowledged_s if acked else a.resolved_s
        verb = "acknowledged" if acked else "resolved"
        if t is None:
            return Verdict("pending", f"{a.label()} not {verb} by {fmt(e.window.hi)} (state {a.state})")
        by = a.acknowledged_by if acked else a.resolved_by
        if e.by is not None and by != e.by:
            return _fail(f"{a.label()} {verb} by {by} at {fmt(t)}, expected by {e.by}")
        if not acked and e.outcome is not None and a.outcome != e.outcome:
            return _fail(f"{a.label()} resolved as {a.outcome} by {by} at {fmt(t)}, expected {e.outcome}")
        if _outside(e, t):
            return _fail(f"{a.label()} {verb} at {fmt(t)}, {_expected(e)}")
        extra = f" as {a.outcome}" if not acked else ""
        return _pass(f"{a.label()} {verb} by {by}{extra} at {fmt(t)}")

    return _each_alert(e, obs, closed, ((a, one(a)) for a in alerts), len(alerts))


def _notification_count(e: Expectation, obs: Observed, closed: bool) -> Verdict:
    sel = e.notifications
    assert sel is not None
    alerts = {a.alert_id: a for a in obs.alerts}
    found = []
    for n in obs.notifications:
        a = alerts.get(n.alert_id)
        if n.sent_s is None or a is None:
            continue
        if (
            (sel.elder is None or a.elder_id == sel.elder)
            and (sel.kind is None or a.kind == sel.kind)
            and (sel.tier is None or n.tier == sel.tier - 1)
            and (sel.role is None or n.role == sel.role)
            and (sel.channel is None or n.channel == sel.channel)
            and (sel.purpose is None or n.purpose == sel.purpose)
            and (not sel.phones or n.phone in sel.phones)
            and not _outside(e, n.sent_s)
        ):
            found.append(n)
    n_found = len(found)
    if n_found > e.count.hi:
        return _fail(f"{n_found} {sel.describe()} sent, expected {e.count.describe()}")
    if n_found >= e.count.lo and (e.count.hi == math.inf or closed):
        return _pass(f"{n_found} sent")
    if closed:
        return _fail(f"{n_found} {sel.describe()} sent by {fmt(e.window.hi)}, expected {e.count.describe()}")
    return PENDING
