"""The roster: shifts (incl. ones that wrap midnight), overrides, and who fills each role."""

from __future__ import annotations

import re
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.alerting.roster import (
    SHANGHAI,
    RosterError,
    Shift,
    check_roster,
    distance_m,
    in_window,
    next_window_end,
    on_duty,
    parse_shift,
    resolve_role,
)
from gateway.domain.people import GeoPoint, Responder, RosterOverride
from gateway.domain.registry import ElderSpec, RegistryError, RegistryFile, registry_from_dicts

# 2025-01-06 is a Monday.
DAY = {"mon": 6, "tue": 7, "wed": 8, "thu": 9, "fri": 10, "sat": 11, "sun": 12}


def local(day: str, hh: int, mm: int = 0, ss: int = 0) -> datetime:
    return datetime(2025, 1, DAY[day], hh, mm, ss, tzinfo=SHANGHAI)


def responder(shifts: list[str], rid: str = "r1", **extra: Any) -> Responder:
    fields: dict[str, Any] = {"id": rid, "name": rid, "role": "hotline", "phone": "+8613800000001"}
    fields.update(extra)
    return Responder(shifts=shifts, **fields)


@pytest.mark.parametrize(
    ("text", "shift"),
    [
        ("mon-fri 08:00-18:00", Shift(frozenset({0, 1, 2, 3, 4}), 8 * 3600, 18 * 3600)),
        ("sat,sun 00:00-24:00", Shift(frozenset({5, 6}), 0, 86_400)),
        ("daily 20:00-08:00", Shift(frozenset(range(7)), 20 * 3600, 8 * 3600)),
        ("fri-mon 22:30-06:15", Shift(frozenset({4, 5, 6, 0}), 22 * 3600 + 1800, 6 * 3600 + 900)),
        ("mon,wed-thu 09:00-12:00", Shift(frozenset({0, 2, 3}), 9 * 3600, 12 * 3600)),
    ],
)
def test_parse_shift(text: str, shift: Shift) -> None:
    assert parse_shift(text) == shift


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mon-fry 08:00-18:00", "unknown day in 'mon-fry'"),
        ("weekdays 08:00-18:00", "unknown day in 'weekdays'"),
        ("mon 8:00-18:00", "is not '<days> HH:MM-HH:MM'"),
        ("mon 08:00-08:00", "starts and ends at the same time"),
    ],
)
def test_bad_shifts_are_named(text: str, message: str) -> None:
    with pytest.raises(RosterError, match=message):
        parse_shift(text)


@pytest.mark.parametrize(
    ("shifts", "at", "expected"),
    [
        (["mon-fri 08:00-18:00"], local("mon", 8), True),
        (["mon-fri 08:00-18:00"], local("mon", 7, 59, 59), False),
        (["mon-fri 08:00-18:00"], local("fri", 17, 59, 59), True),
        (["mon-fri 08:00-18:00"], local("fri", 18), False),
        (["mon-fri 08:00-18:00"], local("sat", 12), False),
        (["sat,sun 00:00-24:00"], local("sun", 23, 59, 59), True),
        (["sat,sun 00:00-24:00"], local("mon", 0), False),
        # wraps midnight: belongs to the day it starts on
        (["daily 20:00-08:00"], local("tue", 3), True),
        (["daily 20:00-08:00"], local("tue", 12), False),
        (["fri 20:00-08:00"], local("sat", 3), True),
        (["fri 20:00-08:00"], local("fri", 3), False),  # that is Thursday night's shift
        (["fri 20:00-08:00"], local("fri", 20), True),
        (["fri 20:00-08:00"], local("sat", 8), False),
        (["sun 22:00-06:00"], local("mon", 5, 59), True),  # Sunday night wraps into the next week
        ([], local("wed", 3), True),  # no shifts: always on duty
        # the time zone is converted: 00:30 UTC is 08:30 in Shanghai
        (["mon-fri 08:00-18:00"], datetime(2025, 1, 6, 0, 30, tzinfo=UTC), True),
    ],
)
def test_on_duty_by_shift(shifts: list[str], at: datetime, expected: bool) -> None:
    assert on_duty(responder(shifts), [], at) is expected


def test_handover_at_the_shift_boundary() -> None:
    night = responder(["daily 20:00-08:00"], "night")
    day = responder(["daily 08:00-20:00"], "day")
    before, boundary = local("wed", 7, 59, 59), local("wed", 8)
    assert (on_duty(night, [], before), on_duty(day, [], before)) == (True, False)
    assert (on_duty(night, [], boundary), on_duty(day, [], boundary)) == (False, True)


def test_shifts_in_another_zone() -> None:
    london = datetime(2025, 1, 6, 9, tzinfo=UTC)  # Monday 09:00 in London is 17:00 in Shanghai
    worker = responder(["mon 08:00-10:00"])
    assert on_duty(worker, [], london, tz=UTC)
    assert not on_duty(worker, [], london)


def _override(start: str, end: str, on: bool, rid: str = "r1") -> RosterOverride:
    return RosterOverride(responder=rid, start=start, end=end, on_duty=on)


@pytest.mark.parametrize(
    ("shifts", "overrides", "at", "expected"),
    [
        # covering a night off: forced on duty
        (
            ["mon-fri 08:00-18:00"],
            [_override("2025-01-06T20:00:00+08:00", "2025-01-07T08:00:00+08:00", True)],
            local("tue", 3),
            True,
        ),
        # away (sick) during a shift: forced off
        (
            ["mon-fri 08:00-18:00"],
            [_override("2025-01-06T00:00:00+08:00", "2025-01-08T00:00:00+08:00", False)],
            local("tue", 10),
            False,
        ),
        # the end is exclusive, and another responder's override does not apply
        (
            ["mon-fri 08:00-18:00"],
            [_override("2025-01-07T00:00:00+08:00", "2025-01-07T10:00:00+08:00", False)],
            local("tue", 10),
            True,
        ),
        (
            ["mon-fri 08:00-18:00"],
            [_override("2025-01-06T00:00:00Z", "2025-01-08T00:00:00Z", False, "r2")],
            local("tue", 10),
            True,
        ),
        # UTC offsets are honoured: 02:00Z-03:00Z is 10:00-11:00 in Shanghai
        ([], [_override("2025-01-07T02:00:00Z", "2025-01-07T03:00:00Z", False)], local("tue", 10, 30), False),
        # overlapping overrides: the last listed wins
        (
            [],
            [
                _override("2025-01-07T00:00:00+08:00", "2025-01-08T00:00:00+08:00", False),
                _override("2025-01-07T09:00:00+08:00", "2025-01-07T12:00:00+08:00", True),
            ],
            local("tue", 10),
            True,
        ),
    ],
)
def test_overrides_win_over_shifts(
    shifts: list[str], overrides: list[RosterOverride], at: datetime, expected: bool
) -> None:
    assert on_duty(responder(shifts), overrides, at) is expected


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        on_duty(responder([]), [], datetime(2025, 1, 6, 10))


HOME = {"lat": 31.2304, "lon": 121.4737}


def _north(metres: float) -> dict[str, float]:
    return {"lat": HOME["lat"] + metres / 111_195.0, "lon": HOME["lon"]}


def _registry(responders: list[dict[str, Any]], overrides: list[dict[str, Any]] | None = None) -> RegistryFile:
    elder = {
        "id": "e1",
        "name": "Wang",
        "community": "c1",
        "grid": "g1",
        "home": HOME,
        "contacts": [
            {"name": "son", "phone": "+8613800000010", "priority": 2},
            {"name": "daughter", "phone": "+8613800000011", "priority": 1, "channels": ["voice"], "provider": "aliyun"},
            {"name": "nephew", "phone": "+8613800000012", "priority": 2, "language": "en"},
        ],
    }
    return registry_from_dicts([elder], responders, overrides)


def _r(rid: str, role: str, **extra: Any) -> dict[str, Any]:
    phone = f"+86139{zlib.crc32(rid.encode()) % 10**8:08d}"
    return {"id": rid, "name": rid, "role": role, "phone": phone, **extra}


STAFF = [
    _r("gw1", "grid_worker", grid="g1", shifts=["mon-fri 08:00-18:00"]),
    _r("gw2", "grid_worker", grid="g2"),
    _r("gw3", "grid_worker", grid="g1", shifts=["daily 18:00-08:00"]),
    _r("ps1", "post_station", community="c1", shifts=["daily 07:00-22:00"]),
    _r("ps2", "post_station", community="c2"),
    _r("v_far", "volunteer", community="c1", position=_north(2900)),
    _r("v_near", "volunteer", community="c1", position=_north(300)),
    _r("v_out", "volunteer", community="c1", position=_north(3100)),
    _r("v_nowhere", "volunteer", community="c1"),
    _r("v_mid", "volunteer", community="c1", position=_north(1000)),
    _r("v_other", "volunteer", community="c2", position=_north(10)),
    _r("v_off", "volunteer", community="c1", position=_north(5), shifts=["sat 10:00-12:00"]),
    _r("hl_day", "hotline", shifts=["daily 08:00-20:00"]),
    _r("hl_night", "hotline", shifts=["daily 20:00-08:00"]),
]


def _keys(role: str, at: datetime, registry: RegistryFile | None = None) -> list[str]:
    registry = registry or _registry(STAFF)
    return [r.key for r in resolve_role(role, registry.elders[0], registry, at)]


@pytest.mark.parametrize(
    ("role", "at", "keys"),
    [
        (
            "family",
            local("mon", 10),
            ["contact:e1:+8613800000011", "contact:e1:+8613800000010", "contact:e1:+8613800000012"],
        ),
        ("grid_worker", local("mon", 10), ["responder:gw1"]),  # gw2 is another grid's
        ("grid_worker", local("mon", 20), ["responder:gw3"]),
        ("grid_worker", local("sat", 10), []),  # nobody of g1 on duty on Saturday morning: may be empty
        ("post_station", local("mon", 10), ["responder:ps1"]),
        ("post_station", local("mon", 23), []),
        # nearest first, within 3 km, at most 3, those without position after the placed ones
        ("volunteer", local("mon", 10), ["responder:v_near", "responder:v_mid", "responder:v_far"]),
        ("hotline", local("mon", 10), ["responder:hl_day"]),
        ("hotline", local("mon", 21), ["responder:hl_night"]),
    ],
)
def test_resolve_role(role: str, at: datetime, keys: list[str]) -> None:
    assert _keys(role, at) == keys


def test_family_recipient_carries_the_contact_details() -> None:
    registry = _registry([])
    first = resolve_role("family", registry.elders[0], registry, local("mon", 10))[0]
    assert (first.name, first.phone, first.channels, first.provider, first.role, first.language) == (
        "daughter",
        "+8613800000011",
        ("voice",),
        "aliyun",
        "family",
        "zh",
    )


def test_volunteers_without_a_position_fill_up_the_list() -> None:
    staff = [
        _r("v_nowhere", "volunteer", community="c1"),
        _r("v_near", "volunteer", community="c1", position=_north(300)),
    ]
    assert _keys("volunteer", local("mon", 10), _registry(staff)) == ["responder:v_near", "responder:v_nowhere"]


def test_volunteers_of_an_elder_without_home_keep_the_listed_order() -> None:
    registry = _registry([_r(f"v{i}", "volunteer", community="c1", position=_north(i)) for i in (5, 1, 3, 2)])
    elder = ElderSpec(id="e2", name="Li", community="c1")
    assert [r.key for r in resolve_role("volunteer", elder, registry, local("mon", 10))] == [
        "responder:v5",
        "responder:v1",
        "responder:v3",
    ]


def test_hotline_is_never_empty() -> None:
    """With nobody on shift (or everyone away), every hotline line is paged."""
    staff = [_r("hl1", "hotline", shifts=["mon 08:00-09:00"]), _r("hl2", "hotline", shifts=["tue 08:00-09:00"])]
    assert _keys("hotline", local("sat", 3), _registry(staff)) == ["responder:hl1", "responder:hl2"]
    away = [
        {"responder": "hl1", "start": "2025-01-06T00:00:00+08:00", "end": "2025-01-07T00:00:00+08:00", "on_duty": False}
    ]
    staff = [_r("hl1", "hotline")]
    assert _keys("hotline", local("mon", 8, 30), _registry(staff, away)) == ["responder:hl1"]


def test_unbound_alerts_reach_only_the_hotline() -> None:
    registry = _registry(STAFF)
    assert [r.key for r in resolve_role("hotline", None, registry, local("mon", 10))] == ["responder:hl_day"]
    assert resolve_role("family", None, registry, local("mon", 10)) == []
    assert resolve_role("grid_worker", None, registry, local("mon", 10)) == []


def test_an_elder_without_grid_or_community_has_no_grid_worker_or_post_station() -> None:
    registry = registry_from_dicts([{"id": "e1", "name": "Wang"}], [_r("gw", "grid_worker", grid="g1")])
    assert resolve_role("grid_worker", registry.elders[0], registry, local("mon", 10)) == []


def test_unknown_role_is_refused() -> None:
    registry = _registry([])
    with pytest.raises(RosterError, match="unknown role 'neighbour'"):
        resolve_role("neighbour", registry.elders[0], registry, local("mon", 10))


def test_check_roster() -> None:
    check_roster(_registry(STAFF))
    with pytest.raises(RosterError, match="responder gw: shift 'mon-fry 08:00-18:00'"):
        check_roster(
            _registry([_r("gw", "grid_worker", grid="g1", shifts=["mon-fry 08:00-18:00"]), _r("hl", "hotline")])
        )
    with pytest.raises(RosterError, match="no hotline responder"):
        check_roster(_registry([_r("gw", "grid_worker", grid="g1")]))
    check_roster(_registry([]), require_hotline=False)
    backwards = [{"responder": "hl", "start": "2025-01-07T00:00:00+08:00", "end": "2025-01-06T00:00:00+08:00"}]
    with pytest.raises(RosterError, match="start is not before end"):
        check_roster(_registry([_r("hl", "hotline")], backwards))


def test_distance() -> None:
    home = GeoPoint(**HOME)
    assert distance_m(home, home) == 0
    assert distance_m(home, GeoPoint(**_north(1000))) == pytest.approx(1000, rel=1e-3)
    shanghai_to_beijing = distance_m(home, GeoPoint(lat=39.9042, lon=116.4074))
    assert shanghai_to_beijing == pytest.approx(1_067_000, rel=0.01)


@pytest.mark.parametrize(
    ("window", "at", "inside", "end"),
    [
        ("22:00-07:00", local("mon", 23), True, local("tue", 7)),
        ("22:00-07:00", local("tue", 3), True, local("tue", 7)),
        ("22:00-07:00", local("tue", 6, 59, 59), True, local("tue", 7)),
        ("22:00-07:00", local("tue", 7), False, local("wed", 7)),
        ("22:00-07:00", local("tue", 21, 59), False, local("wed", 7)),
        ("22:00-07:00", local("tue", 22), True, local("wed", 7)),
        ("12:00-14:00", local("tue", 13), True, local("tue", 14)),
        ("12:00-14:00", local("tue", 15), False, local("wed", 14)),
    ],
)
def test_windows(window: str, at: datetime, inside: bool, end: datetime) -> None:
    assert in_window(window, at) is inside
    assert next_window_end(window, at) == end
    assert next_window_end(window, at.astimezone(UTC)) == end
    assert next_window_end(window, at) - at <= timedelta(days=1)


def test_a_grid_is_community_and_grid_every_community_has_its_wangge1() -> None:
    elders = [
        {"id": "eA", "name": "A", "community": "和平社区", "grid": "网格1"},
        {"id": "eB", "name": "B", "community": "幸福社区", "grid": "网格1"},
    ]
    staff = [
        _r("gwA", "grid_worker", grid="网格1", community="和平社区"),
        _r("gwB", "grid_worker", grid="网格1", community="幸福社区"),
    ]
    registry = registry_from_dicts(elders, staff)
    for elder, expected in zip(registry.elders, (["responder:gwA"], ["responder:gwB"]), strict=True):
        assert [r.key for r in resolve_role("grid_worker", elder, registry, local("mon", 10))] == expected


def test_a_grid_worker_without_a_community_is_the_only_ones_or_refused() -> None:
    legacy = [_r("gw", "grid_worker", grid="网格1")]
    one = registry_from_dicts([{"id": "eA", "name": "A", "community": "和平社区", "grid": "网格1"}], legacy)
    assert one.responders[0].community == "和平社区"  # from before communities were required: what it meant
    assert [r.key for r in resolve_role("grid_worker", one.elders[0], one, local("mon", 10))] == ["responder:gw"]
    with pytest.raises(RegistryError, match=re.escape("responder(s) gw: a grid worker needs a community (there are 2")):
        registry_from_dicts(
            [
                {"id": "eA", "name": "A", "community": "和平社区", "grid": "网格1"},
                {"id": "eB", "name": "B", "community": "幸福社区", "grid": "网格1"},
            ],
            legacy,
        )
    # an import of 幸福社区's elders alone, with 和平社区's stored: just as ambiguous
    with pytest.raises(RegistryError, match="needs a community"):
        registry_from_dicts(
            [{"id": "eB", "name": "B", "community": "幸福社区", "grid": "网格1"}], legacy, communities=["和平社区"]
        )


def test_a_stored_registry_with_such_a_worker_still_loads_and_pages_the_next_tier(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What is in the database loads (a gateway that does not start pages nobody); the worker is paged for no one."""
    elders = [
        {"id": "eA", "name": "A", "community": "和平社区", "grid": "网格1"},
        {"id": "eB", "name": "B", "community": "幸福社区", "grid": "网格1"},
    ]
    with caplog.at_level("ERROR", "gateway.domain.registry"):
        stored = registry_from_dicts(
            elders, [_r("gw", "grid_worker", grid="网格1"), _r("hl", "hotline")], strict_grids=False
        )
    assert any("gw: a grid worker needs a community" in r.message for r in caplog.records)
    for elder in stored.elders:
        assert resolve_role("grid_worker", elder, stored, local("mon", 10)) == []
        assert [r.key for r in resolve_role("hotline", elder, stored, local("mon", 10))] == ["responder:hl"]
