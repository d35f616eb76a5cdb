"""Detector correctness, boundary cases included, over batches built by the real decoder."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from gateway.detect.engine import DetectorSet
from gateway.detect.index import DetectSettings
from gateway.domain.detection import Detection
from gateway.domain.registry import registry_from_dicts
from gateway.pipeline.batch import RawBatch
from gateway.pipeline.decode import BatchDecoder

# 2026-11-22 10:00 in Shanghai (02:00 UTC): daytime
DAY = 1_795_312_800_000
NIGHT = DAY + 13 * 3_600_000  # 23:00 Shanghai
HOME = (31.2304, 121.4737)
M_LAT = 1 / 110_574  # degrees of latitude per metre
M_LON = 1 / (111_320 * math.cos(math.radians(HOME[0])))

Msg = tuple[str, str, str, dict[str, Any]]


def elder(eid: str = "e1", **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": eid,
        "name": "王秀英",
        "community": "c1",
        "grid": "g1",
        "devices": [
            {"id": f"wb-{eid}", "type": "wristband"},
            {"id": f"pg-{eid}", "type": "pager"},
            {"id": f"gl-{eid}", "type": "glucose"},
            {"id": f"bp-{eid}", "type": "bp"},
        ],
    }
    base.update(extra)
    return base


def circle_fence(radius_m: float = 200, **extra: Any) -> dict[str, Any]:
    return {"id": "home", "circle": {"lat": HOME[0], "lon": HOME[1], "radius_m": radius_m}, **extra}


class NoFallModel:
    """These tests feed no raw acceleration; the model has its own tests."""

    def update(self, *args: Any) -> list[Any]:
        return []


class Harness:
    def __init__(self, elders: list[dict[str, Any]], **settings: Any) -> None:
        self.detectors = DetectorSet(registry_from_dicts(elders), DetectSettings(**settings), fall_model=NoFallModel())
        self.decoder = BatchDecoder()

    def feed(self, messages: list[Msg], received_ms: int | None = None) -> list[Detection]:
        topics = [f"eldercare/v1/{t}/{d}/{c}".encode() for t, d, c, _ in messages]
        payloads = [json.dumps(p).encode() for *_, p in messages]
        now = received_ms or max(int(p.get("ts", DAY)) for *_, p in messages)
        raw = RawBatch(topics, payloads, [0] * len(topics), [False] * len(topics), now)
        decoded = self.decoder.decode(raw)
        assert not decoded.dead_letters, decoded.dead_letters
        return self.detectors.process(decoded)

    def band(self, ts: int, device: str = "wb-e1", **fields: Any) -> list[Detection]:
        return self.feed([("wristband", device, "telemetry", {"ts": ts, **fields})])

    def event(self, ts: int, event: str, device: str = "pg-e1", kind: str = "pager") -> list[Detection]:
        return self.feed([(kind, device, "event", {"ts": ts, "event": event})])


def kinds(dets: list[Detection]) -> list[tuple[str, str, bool]]:
    return [(d.kind, d.severity, d.cleared) for d in dets]


def at(dx_m: float, dy_m: float = 0.0) -> dict[str, float]:
    """Position dx metres east, dy north of HOME."""
    return {"lat": HOME[0] + dy_m * M_LAT, "lon": HOME[1] + dx_m * M_LON, "gps_acc_m": 5.0}


# --- SOS / call -------------------------------------------------------------------------


def test_sos_is_reported_at_once_and_a_cancel_inside_the_grace_withdraws_it() -> None:
    h = Harness([elder()], sos_cancel_grace_s=30)
    assert kinds(h.event(DAY, "sos")) == [("sos", "critical", False)]
    withdrawn = h.event(DAY + 30_000, "cancel")  # exactly at the end of the grace: inside
    assert kinds(withdrawn) == [("sos", "info", True)]
    assert withdrawn[0].evidence["withdrawn"] is True


def test_a_cancel_just_outside_the_grace_does_not_withdraw() -> None:
    h = Harness([elder()], sos_cancel_grace_s=30)
    h.event(DAY, "sos")
    late = h.event(DAY + 30_001, "cancel")
    assert kinds(late) == [("cancel_late", "info", False)]
    # nothing pending any more: a plain cancel ("I am OK") for the alert engine
    assert kinds(h.event(DAY + 40_000, "cancel")) == [("cancel", "info", False)]


def test_call_button_is_a_warning_from_pager_and_band() -> None:
    h = Harness([elder()])
    assert kinds(h.event(DAY, "call")) == [("call", "warning", False)]
    assert kinds(h.event(DAY, "sos", device="wb-e1", kind="wristband")) == [("sos", "critical", False)]


# --- geofence ---------------------------------------------------------------------------


def walk(h: Harness, start: int, points: list[dict[str, float]], step_ms: int = 30_000) -> list[Detection]:
    out: list[Detection] = []
    for i, p in enumerate(points):
        out += h.band(start + i * step_ms, **p)
    return out


def test_gps_jitter_across_the_edge_gives_one_exit_not_a_stream() -> None:
    h = Harness([elder(fences=[circle_fence(200)])], fence_margin_m=25, fence_dwell_s=60, fence_dwell_readings=2)
    # jitter +-20 m around the 200 m boundary: inside the margin band, never an exit
    jitter = [at(200 + (20 if i % 2 else -20)) for i in range(20)]
    assert walk(h, DAY, jitter) == []
    # then really out (300 m) for several fixes, jittering: exactly one exit
    out = walk(h, DAY + 20 * 30_000, [at(300 + (i % 3) * 10) for i in range(10)])
    assert kinds(out) == [("geofence_exit", "warning", False)]
    assert out[0].evidence["fence"] == "home" and out[0].evidence["metres_outside"] > 25


def test_dwell_a_single_outside_fix_is_not_an_exit_and_reentry_clears() -> None:
    h = Harness([elder(fences=[circle_fence(200)])], fence_dwell_s=60, fence_dwell_readings=2, fence_reentry_readings=2)
    assert walk(h, DAY, [at(0), at(400), at(0), at(0)]) == []
    out = walk(h, DAY + 600_000, [at(400), at(400), at(400)])
    assert kinds(out) == [("geofence_exit", "warning", False)]
    back = walk(h, DAY + 900_000, [at(100), at(50)])
    assert kinds(back) == [("geofence_exit", "warning", True)]


def test_circle_radius_is_metres_at_the_fence_latitude() -> None:
    north = 60.0  # at 60 degrees a degree of longitude is half as long as at the equator
    fence = {"id": "home", "circle": {"lat": north, "lon": 10.0, "radius_m": 150}}
    h = Harness([elder(fences=[fence])], fence_margin_m=10, fence_dwell_s=0, fence_dwell_readings=1)
    deg_per_m_lon = 1 / (111_320 * math.cos(math.radians(north)))
    inside = {"lat": north, "lon": 10.0 + 130 * deg_per_m_lon, "gps_acc_m": 3.0}
    outside = {"lat": north, "lon": 10.0 + 175 * deg_per_m_lon, "gps_acc_m": 3.0}
    assert h.band(DAY, **inside) == []
    assert kinds(h.band(DAY + 1000, **outside)) == [("geofence_exit", "warning", False)]


def square(lon0: float, lat0: float, half_m: float) -> list[list[float]]:
    dx, dy = half_m * M_LON, half_m * M_LAT
    return [
        [lon0 - dx, lat0 - dy],
        [lon0 + dx, lat0 - dy],
        [lon0 + dx, lat0 + dy],
        [lon0 - dx, lat0 + dy],
        [lon0 - dx, lat0 - dy],
    ]


def test_a_fence_with_a_hole_counts_the_hole_as_outside() -> None:
    # a courtyard: the outer square is allowed, the inner square (a pond, a road) is not
    geojson = {
        "type": "Polygon",
        "coordinates": [square(HOME[1], HOME[0], 300), list(reversed(square(HOME[1], HOME[0], 100)))],
    }
    h = Harness(
        [elder(fences=[{"id": "yard", "geojson": geojson}])], fence_margin_m=10, fence_dwell_s=0, fence_dwell_readings=1
    )
    assert h.band(DAY, **at(200)) == []  # in the ring
    assert kinds(h.band(DAY + 1000, **at(0))) == [("geofence_exit", "warning", False)]  # in the hole
    assert kinds(h.band(DAY + 2000, **at(200)) + h.band(DAY + 3000, **at(210))) == [("geofence_exit", "warning", True)]


def test_poor_gps_accuracy_is_not_taken_as_an_exit() -> None:
    h = Harness([elder(fences=[circle_fence(200)])], fence_dwell_s=0, fence_dwell_readings=1)
    vague = {**at(260), "gps_acc_m": 120.0}  # 60 m beyond the edge, +-120 m
    assert h.band(DAY, **vague) == []
    assert h.band(DAY + 1000, **{**at(260), "gps_acc_m": 800.0}) == []  # unusable fix
    assert kinds(h.band(DAY + 2000, **{**at(260), "gps_acc_m": 10.0})) == [("geofence_exit", "warning", False)]


def test_night_window_fence_and_dementia_at_night_is_critical() -> None:
    fence = circle_fence(200, active="20:00-06:00")
    h = Harness([elder(conditions=["dementia"], fences=[fence])], fence_dwell_s=0, fence_dwell_readings=1)
    assert h.band(DAY, **at(500)) == []  # 10:00, fence inactive
    h.band(DAY + 1000, **at(0))
    out = h.band(NIGHT, **at(500))
    assert kinds(out) == [("geofence_exit", "critical", False)]
    assert out[0].evidence["at_night"] is True
    day_elder = Harness(
        [elder(conditions=["dementia"], fences=[circle_fence(200)])], fence_dwell_s=0, fence_dwell_readings=1
    )
    assert kinds(day_elder.band(DAY, **at(500))) == [("geofence_exit", "warning", False)]


# --- vitals -----------------------------------------------------------------------------


def test_heart_rate_persistence_and_a_reading_exactly_on_a_threshold() -> None:
    h = Harness([elder()], persistence_readings=3, persistence_span_s=600)
    assert h.band(DAY, hr=131) == []  # exactly on the NEWS2 critical bound: abnormal, 1st
    assert h.band(DAY + 60_000, hr=131) == []
    out = h.band(DAY + 120_000, hr=131)
    assert kinds(out) == [("hr_high", "critical", False)]
    assert out[0].evidence["threshold_rule"] == "hr_critical_high"
    h2 = Harness([elder()], persistence_readings=3, persistence_span_s=600)
    assert kinds(h2.band(DAY, hr=130) + h2.band(DAY + 1, hr=130) + h2.band(DAY + 2, hr=130)) == [
        ("hr_high", "warning", False)
    ]


def test_one_bad_sample_pages_nobody_and_normal_readings_clear() -> None:
    h = Harness([elder()], persistence_readings=3, clear_readings=2)
    assert h.band(DAY, spo2=85) == []
    assert h.band(DAY + 60_000, spo2=97) == []
    assert h.band(DAY + 120_000, spo2=85) == []
    assert h.band(DAY + 180_000, spo2=85) == []
    assert kinds(h.band(DAY + 240_000, spo2=85)) == [("spo2_low", "critical", False)]
    assert h.band(DAY + 300_000, spo2=96) == []
    assert kinds(h.band(DAY + 360_000, spo2=96)) == [("spo2_low", "critical", True)]


def test_warning_escalates_to_critical_when_it_worsens() -> None:
    h = Harness([elder()], persistence_readings=2)
    out = [d for i, hr in enumerate([115, 115, 140, 140]) for d in h.band(DAY + i * 1000, hr=hr)]
    assert kinds(out) == [("hr_high", "warning", False), ("hr_high", "critical", False)]


def test_single_glucose_or_cuff_reading_is_enough_and_bounds_are_exact() -> None:
    h = Harness([elder()])
    glucose = h.feed([("glucose", "gl-e1", "telemetry", {"ts": DAY, "glucose": 2.9})])
    assert kinds(glucose) == [("hypoglycaemia", "critical", False)]
    h2 = Harness([elder()])
    on_bound = h2.feed([("glucose", "gl-e1", "telemetry", {"ts": DAY, "glucose": 3.0})])
    assert kinds(on_bound) == [("hypoglycaemia", "warning", False)]  # < 3.0 is level 2
    bp = h.feed([("bp", "bp-e1", "telemetry", {"ts": DAY, "systolic": 180, "diastolic": 100})])
    assert kinds(bp) == [("hypertensive_crisis", "critical", False)]
    bp2 = Harness([elder()]).feed([("bp", "bp-e1", "telemetry", {"ts": DAY, "systolic": 150, "diastolic": 120})])
    assert kinds(bp2) == [("hypertensive_crisis", "critical", False)]
    assert Harness([elder()]).feed([("bp", "bp-e1", "telemetry", {"ts": DAY, "systolic": 179, "diastolic": 119})]) == []


def test_personal_thresholds_override_the_defaults() -> None:
    h = Harness([elder(thresholds={"glucose_warning_low": 4.5})])
    out = h.feed([("glucose", "gl-e1", "telemetry", {"ts": DAY, "glucose": 4.2})])
    assert kinds(out) == [("hypoglycaemia", "warning", False)]
    assert Harness([elder()]).feed([("glucose", "gl-e1", "telemetry", {"ts": DAY, "glucose": 4.2})]) == []


def test_out_of_order_timestamps_and_two_readings_of_one_device_in_a_batch() -> None:
    h = Harness([elder()], persistence_readings=3, persistence_span_s=3600)
    batch: list[Msg] = [
        ("wristband", "wb-e1", "telemetry", {"ts": DAY + t, "hr": 45 if t else 38}) for t in (2000, 0, 1000)
    ]
    # sorted by time: 38 (critical low), then two normal-ish 45s: no streak of 3 -> nothing
    assert h.feed(batch) == []
    batch2: list[Msg] = [
        ("wristband", "wb-e1", "telemetry", {"ts": DAY + 10_000 + t, "hr": 38}) for t in (2000, 0, 1000)
    ]
    out = h.feed(batch2)
    assert kinds(out) == [("hr_low", "critical", False)]
    assert out[0].ts_ms == DAY + 12_000  # fired on the third reading in time order
    late = h.band(DAY + 5_000, hr=90)  # older than what was processed: changes no state
    assert late == []


# --- falls ------------------------------------------------------------------------------


def test_fall_without_recovery_is_raised_to_critical_on_the_timer() -> None:
    h = Harness([elder()], fall_confirm_s=60)
    assert kinds(h.event(DAY, "fall", device="wb-e1", kind="wristband")) == [("fall", "warning", False)]
    assert h.detectors.tick(DAY + 59_999) == []
    out = h.detectors.tick(DAY + 60_000)
    assert kinds(out) == [("fall_no_recovery", "critical", False)]
    assert h.detectors.tick(DAY + 120_000) == []


def test_fall_followed_by_getting_up_is_cleared_and_never_critical() -> None:
    h = Harness([elder()], fall_confirm_s=60, fall_movement_steps=10)
    h.band(DAY - 1000, steps=500)
    h.event(DAY, "fall", device="wb-e1", kind="wristband")
    assert h.band(DAY + 20_000, steps=505) == []
    assert kinds(h.band(DAY + 30_000, steps=520)) == [("fall", "warning", True)]
    assert h.detectors.tick(DAY + 120_000) == []


def test_cancel_after_a_band_fall_means_recovered() -> None:
    h = Harness([elder()])
    h.event(DAY, "fall", device="wb-e1", kind="wristband")
    assert kinds(h.event(DAY + 5000, "cancel", device="wb-e1", kind="wristband")) == [
        ("fall", "warning", True),
        ("cancel", "info", False),
    ]


# --- device health and inactivity ---------------------------------------------------------


def test_silent_exactly_at_the_limit_is_not_yet_silent() -> None:
    h = Harness([elder()], silent_factor=3.0)  # 60 s interval -> 180 s limit
    h.band(DAY, hr=70)
    assert h.detectors.tick(DAY + 180_000) == []
    out = h.detectors.tick(DAY + 180_001)
    assert [(d.kind, d.device_id) for d in out] == [("device_silent", "wb-e1")]
    assert h.detectors.tick(DAY + 300_000) == []  # reported once
    assert kinds(h.band(DAY + 310_000, hr=70)) == [("device_silent", "warning", True)]


def test_will_message_marks_the_device_silent_at_once() -> None:
    h = Harness([elder()])
    out = h.feed([("pager", "pg-e1", "status", {"online": False})], received_ms=DAY)
    assert kinds(out) == [("device_silent", "warning", False)]


def test_low_battery_with_time_left_from_the_slope() -> None:
    h = Harness([elder()])
    assert h.band(DAY, battery=30) == []
    out = h.band(DAY + 3_600_000, battery=15)  # 15 points an hour -> about 1 hour left
    assert kinds(out) == [("low_battery", "warning", False)]
    assert out[0].evidence["hours_left"] == pytest.approx(1.0, abs=0.05)
    assert kinds(h.band(DAY + 4_000_000, battery=5)) == [("low_battery", "critical", False)]
    assert kinds(h.band(DAY + 8_000_000, battery=80)) == [("low_battery", "critical", True)]


def test_not_worn_from_flag_and_from_removed_event() -> None:
    h = Harness([elder()], not_worn_readings=2)
    assert h.band(DAY, worn=False) == []
    assert kinds(h.band(DAY + 60_000, worn=False)) == [("not_worn", "warning", False)]
    assert kinds(h.band(DAY + 120_000, worn=True)) == [("not_worn", "warning", True)]
    assert kinds(h.event(DAY, "removed", device="wb-e1", kind="wristband")) == [("not_worn", "warning", False)]


def test_inactivity_only_for_elders_living_alone_in_daytime() -> None:
    alone = Harness([elder(lives_alone=True)], inactivity_hours=4)
    together = Harness([elder(lives_alone=False)], inactivity_hours=4)
    for h in (alone, together):
        h.band(DAY - 3_600_000, steps=100)
        h.band(DAY - 3_500_000, steps=120)
        for k in range(1, 6):
            h.band(DAY + k * 3_600_000 - 3_600_000, steps=120)  # reporting, not moving
    now = DAY + 4 * 3_600_000  # 14:00 local
    out = alone.detectors.tick(now)
    assert kinds(out) == [("inactivity", "warning", False)]
    assert together.detectors.tick(now) == []
    assert [d for d in alone.detectors.tick(NIGHT + 3_600_000) if d.kind == "inactivity"] == []
    resumed = [d for d in alone.band(now + 60_000, steps=150) if d.kind == "inactivity"]
    assert kinds(resumed) == [("inactivity", "warning", True)]


def test_a_batch_mixing_all_four_device_types() -> None:
    h = Harness([elder(fences=[circle_fence(200)])], fence_dwell_s=0, fence_dwell_readings=1, persistence_readings=1)
    out = h.feed(
        [
            ("wristband", "wb-e1", "telemetry", {"ts": DAY, **at(600), "hr": 150}),
            ("pager", "pg-e1", "event", {"ts": DAY, "event": "sos"}),
            ("glucose", "gl-e1", "telemetry", {"ts": DAY, "glucose": 2.5}),
            ("bp", "bp-e1", "telemetry", {"ts": DAY, "systolic": 190, "diastolic": 125}),
        ]
    )
    assert sorted((d.kind, d.elder_id) for d in out) == sorted(
        [
            ("hr_high", "e1"),
            ("geofence_exit", "e1"),
            ("sos", "e1"),
            ("hypoglycaemia", "e1"),
            ("hypertensive_crisis", "e1"),
        ]
    )
    for d in out:
        assert d.evidence, d


def test_an_unregistered_device_is_still_watched_with_default_thresholds() -> None:
    h = Harness([elder()])
    out = h.feed([("glucose", "gl-unknown", "telemetry", {"ts": DAY, "glucose": 2.5})])
    assert [(d.kind, d.elder_id, d.device_id) for d in out] == [("hypoglycaemia", None, "gl-unknown")]


def test_a_timer_tick_before_any_device_is_known_finds_nothing() -> None:
    """A gateway with an empty registry ticks before the first message arrives."""
    from gateway.detect.engine import DetectorSet
    from gateway.domain.registry import RegistryFile

    assert DetectorSet(RegistryFile()).tick(1_700_000_000_000) == []
