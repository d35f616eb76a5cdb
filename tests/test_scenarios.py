"""Scenarios: every shipped file passes through ``eldercare-sim scenario run``; a wrong one fails
with a message that says what was expected and what happened; bad files are refused with
one line naming the file, line and key."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulators.scenario import ScenarioError, load_scenario
from simulators.scenario.clock import ScenarioClock
from simulators.scenario.expect import judge
from simulators.scenario.observe import AlertSeen, FiringSeen, Observed
from simulators.scenario.plan import AlertSelector, Expectation
from simulators.scenario.timespec import AT_LEAST_ONE, SpecError, Window, parse_duration, parse_range, parse_window
from simulators.services.mosquitto import LocalMosquitto
from simulators.services.postgres import LocalPostgres
from tests.support import REPO

pytestmark = pytest.mark.slow

SCENARIOS = sorted((REPO / "simulators" / "scenarios").glob("*.yaml"))
SPEED = "240"  # the clock holds while the gateway works, so windows stay exact at this speed


def eldercare(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "simulators.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        check=False,
    )


def test_every_shipped_scenario_passes() -> None:
    assert len(SCENARIOS) >= 9
    started = time.monotonic()
    result = eldercare("scenario", "run", "--speed", SPEED, *(str(p.relative_to(REPO)) for p in SCENARIOS))
    took = time.monotonic() - started
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines[-1] == f"scenarios passed={len(SCENARIOS)} failed=0"
    table = lines[-1 - len(SCENARIOS) : -1]
    assert sorted(row.split()[0] for row in table) == sorted(load_scenario(p).name for p in SCENARIOS)
    assert all(row.split()[1] == "PASS" for row in table), table
    print(f"{len(SCENARIOS)} scenarios in {took:.1f} s")


WRONG = """\
name: deliberately-wrong
description: an SOS nobody answers; the expectations claim more than happens
start: "09:00"
end: 5m
world:
  elders:
    - id: li
      name: 李桂英
      devices: [pager]
      contacts: [{name: 李强, phone: "+8613800000201"}]
  responders:
    - {id: grid-1, name: 王芳, role: grid_worker, phone: "+8613900000001", grid: 网格1}
    - {id: hotline, name: 24小时热线, role: hotline, phone: "+8640000000001"}
timeline:
  - {at: 10s, id: sos, elder: li, event: sos}
expect:
  - alert: {elder: li, kind: sos, severity: critical}
    at: within 5s
    since: sos
  - alert: {elder: li, kind: sos}
    tier_reached: 3
    at: within 1m
    since: sos
  - alert: {elder: li, kind: sos}
    acknowledged: {by: 王芳}
    at: within 2m
"""


def test_a_wrong_scenario_fails_with_what_was_expected_and_seen(
    tmp_path: Path, broker: LocalMosquitto, postgres_server: LocalPostgres
) -> None:
    path = tmp_path / "wrong.yaml"
    path.write_text(WRONG, encoding="utf-8")
    result = eldercare(
        "scenario",
        "run",
        "--speed",
        SPEED,
        "--mqtt-port",
        str(broker.port),
        "--postgres",
        postgres_server.dsn,
        str(path),
        timeout=120,
    )
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert out.strip().splitlines()[-1] == "scenarios passed=0 failed=1"
    row = out.strip().splitlines()[-2]
    assert row.startswith("deliberately-wrong ") and " FAIL " in row and " 1/3 " in row and "(+1 more)" in row
    # the details name the expectation, its line, what was expected and what happened
    assert (
        "#2 (line 20) tier 3 reached for alert sos of li, 10s..1m10s: tier 3 of A1 sos of li not reached "
        "by 1m10s (highest: tier 2 at 10s)"
    ) in out
    assert (
        "#3 (line 24) alert sos of li acknowledged by 王芳, within 2m: A1 sos of li not acknowledged by 2m "
        "(state notifying)"
    ) in out


BASE = """\
name: base
world:
  elders:
    - id: li
      devices: [wristband, pager]
      contacts: [{name: 李强, phone: "+8613800000201"}]
timeline:
  - {at: 30s, elder: li, event: sos}
expect:
  - alert: {elder: li, kind: sos}
    tier_reached: 1
"""


INVALID = [
    (
        "event: sos}",
        "evnt: sos}",
        "bad.yaml:8: timeline[0].evnt: unknown key (known: at, id, say, elder, device, person, event, reading, walk, "
        "accel, get_up, silent, status, press, sms, resolve)",
    ),
    (
        "at: 30s",
        "at: 5 minutes",
        "bad.yaml:8: timeline[0].at: '5 minutes' is not a duration like 90s, 2m, 1m30s, 1h, 500ms or a number of "
        "seconds",
    ),
    ("elder: li, event", "elder: zhang, event", "bad.yaml:8: timeline[0].elder: unknown elder 'zhang' (known: li)"),
    ("alert: {elder: li", "alert: {elder: lee", "bad.yaml:10: expect[0].alert.elder: unknown elder 'lee' (known: li)"),
    (
        "    tier_reached: 1\n",
        "    tier_reached: 1\n    at: soon\n",
        "bad.yaml:12: expect[0].at: 'soon' is not a window like '90s ± 30s', 'within 2m', '60s..2m', 'after 5m' or "
        "'at 90s'",
    ),
    (
        "kind: sos}",
        "kind: fall_no_recovery}",
        "bad.yaml:10: expect[0].alert.kind: fall_no_recovery is a detection; its alert is kind fall, severity critical",
    ),
    (
        '"+8613800000201"',
        '"12345"',
        "bad.yaml:6: world.elders[0].contacts[0].phone: '12345' is not an E.164 phone number (e.g. \"+8613800138000\", "
        "quoted)",
    ),
    (
        "event: sos}",
        "event: call, device: wristband}",
        "bad.yaml:8: timeline[0].device: a wristband cannot do event 'call'",
    ),
]


@pytest.mark.parametrize(("old", "new", "message"), INVALID)
def test_an_invalid_file_gets_one_clear_message(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in BASE
    path = tmp_path / "bad.yaml"
    path.write_text(BASE.replace(old, new), encoding="utf-8")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(caught.value) == f"{path.parent}/{message}"


def test_the_command_refuses_invalid_files_before_running_anything(tmp_path: Path) -> None:
    paths, expected = [], []
    for i, (old, new, message) in enumerate(INVALID):
        (tmp_path / str(i)).mkdir()
        paths.append(str(tmp_path / str(i) / "bad.yaml"))
        Path(paths[-1]).write_text(BASE.replace(old, new), encoding="utf-8")
        expected.append(f"invalid scenario: {tmp_path / str(i)}/{message}")
    (tmp_path / "good.yaml").write_text(BASE, encoding="utf-8")
    result = eldercare("scenario", "run", str(tmp_path / "good.yaml"), *paths, timeout=60)
    assert result.returncode == 2  # no service was started, nothing was played
    assert result.stderr.strip().splitlines() == expected
    assert result.stdout == ""


def test_the_shipped_files_and_the_base_are_valid(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(BASE, encoding="utf-8")
    result = eldercare("scenario", "check", str(tmp_path / "base.yaml"), *map(str, SCENARIOS), timeout=60)
    assert result.returncode == 0, result.stderr
    assert "sos-flood-1000.yaml: ok (1000 elders, 1 steps, 5 expectations)" in result.stdout


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("2m", 120), ("1m30s", 90), ("1h", 3600), ("500ms", 0.5), (45, 45), ("2.5", 2.5)]
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "lo", "hi"),
    [
        ("90s ± 30s", 60, 120),
        ("90s +- 30s", 60, 120),
        ("within 2m", 0, 120),
        ("60s..2m", 60, 120),
        ("after 5m", 300, math.inf),
        ("at 1m", 60, 60),
        ("10s ± 30s", 0, 40),
    ],
)
def test_windows(text: str, lo: float, hi: float) -> None:
    window = parse_window(text)
    assert (window.lo, window.hi) == (lo, hi)


@pytest.mark.parametrize("text", ["soon", "90", "2m..1m", "within", "± 3s"])
def test_bad_windows(text: str) -> None:
    with pytest.raises(SpecError):
        parse_window(text)


@pytest.mark.parametrize(
    ("text", "lo", "hi"),
    [(3, 3, 3), ("2..4", 2, 4), (">= 1", 1, math.inf), ("<= 2", 0, 2), ("> 0", 1, math.inf), ("< 5", 0, 4)],
)
def test_ranges(text: object, lo: int, hi: float) -> None:
    r = parse_range(text)
    assert (r.lo, r.hi) == (lo, hi)


def _alert(severity_s: dict[str, float] | None = None) -> AlertSeen:
    return AlertSeen(
        1,
        "A1",
        "li",
        "sos",
        "critical",
        "notifying",
        30.0,
        severity_s or {"critical": 30.0},
        None,
        None,
        None,
        None,
        None,
    )


def _tier_expectation(window: Window, tier: int = 3, check: str = "tier_reached") -> Expectation:
    return Expectation(
        1,
        10,
        check,
        window,
        AT_LEAST_ONE,
        alert=AlertSelector("li", "sos"),  # type: ignore[arg-type]
        tier=tier,
    )


@pytest.mark.parametrize(
    ("firings", "now", "status", "detail"),
    [
        ([], 100, "pending", ""),
        ([(0, 30), (1, 30)], 200, "fail", "tier 3 of A1 sos of li not reached by 3m10s (highest: tier 2 at 30s)"),
        ([(0, 30), (1, 30), (2, 150)], 160, "pass", "tier 3 of A1 sos of li reached at 2m30s"),
        ([(0, 30), (1, 30), (2, 100)], 160, "fail", "tier 3 of A1 sos of li reached at 1m40s, expected 2m10s..3m10s"),
    ],
)
def test_judging_a_tier_in_a_window(firings: list[tuple[int, float]], now: float, status: str, detail: str) -> None:
    e = _tier_expectation(Window(130, 190, "2m40s ± 30s"))
    obs = Observed(now, now, (_alert(),), tuple(FiringSeen(1, t, 1, at, 1) for t, at in firings), (), ())
    verdict = judge(e, obs)
    assert (verdict.status, verdict.detail) == (status, detail)


def test_a_tier_beyond_fails_at_once_and_none_passes_when_the_window_closes() -> None:
    e = _tier_expectation(Window(0, 600, "within 10m"), tier=2, check="no_tier_beyond")
    quiet = Observed(300, 300, (_alert(),), (FiringSeen(1, 1, 1, 30, 1),), (), ())
    assert judge(e, quiet).status == "pending"
    assert judge(e, quiet, final=True).status == "pass"
    paged = Observed(300, 300, (_alert(),), (FiringSeen(1, 2, 1, 150, 1),), (), ())
    assert judge(e, paged).detail == "tier 3 of A1 sos of li paged at 2m30s"


def test_the_clock_holds_without_jumping() -> None:
    clock = ScenarioClock(start_ms=1_000_000, speed=1000)
    clock.hold_at(5.0)
    clock.start()
    time.sleep(0.02)  # 20 scenario seconds pass in real time, but the clock stands at its limit
    assert clock.elapsed_s() == 5.0 and clock.held and clock.now_ms() == 1_005_000
    clock.hold_at(math.inf)
    time.sleep(0.005)
    assert 5.0 < clock.elapsed_s() < 5.0 + 1000 * 0.5  # goes on from 5 s, not from 25 s
    assert clock.at_monotonic(time.monotonic()) == pytest.approx(clock.elapsed_s(), abs=1.0)
