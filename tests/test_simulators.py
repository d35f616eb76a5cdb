"""Device simulators: contract-exact payloads, realistic signals, and real MQTT sessions."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from devices.codec import Rejected, decode_payload, route_topic
from devices.contracts import (
    BloodPressureReading,
    DeviceStatus,
    GlucoseReading,
    Payload,
    WristbandTelemetry,
)
from gateway.detect.fall_params import FallModelParams
from gateway.detect.fall_stream import FallDetector
from gateway.provision import BrokerCredentials
from simulators.devices import (
    BloodPressureCuff,
    DeviceRefused,
    GlucoseMeter,
    Outgoing,
    Pager,
    SimulatedDevice,
    Wristband,
    accel,
    paths,
)
from simulators.devices.wire import WILL_PAYLOAD
from simulators.services.mosquitto import LocalMosquitto
from tests.support import GatewayRunner, count, query, wait_until

T0 = 1_795_000_000_000  # 2026-11-18 19:06:40 in Shanghai
HOME = (31.2304, 121.4737)


class FakeClock:
    def __init__(self, t: int = T0) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


def decoded(messages: list[Outgoing]) -> tuple[list[Payload], list[str]]:
    """Every message through the gateway's own codec: the records, and the reasons of any reject."""
    records: list[Payload] = []
    rejects: list[str] = []
    for m in messages:
        route = route_topic(m.topic)
        assert not isinstance(route, Rejected), route
        result = decode_payload(m.payload, route, m.ts_ms or T0)
        if isinstance(result, Rejected):
            rejects.append(f"{m.topic} {m.payload[:120]!r}: {result.reason}")
        else:
            records += result
    return records, rejects


def run_for(
    devices: list[SimulatedDevice],
    clock: FakeClock,
    hours: float,
    step_s: float = 60.0,
    actions: dict[int, Any] | None = None,
) -> list[Outgoing]:
    out: list[Outgoing] = []
    steps = round(hours * 3600 / step_s)
    for k in range(steps):
        clock.t = T0 + round(k * step_s * 1000)
        if actions and k in actions:
            actions[k]()
        for d in devices:
            out += d.advance(clock.t)
    return out


# -- payloads ---------------------------------------------------------------------------------------


def test_everything_the_simulators_emit_decodes_under_the_contracts() -> None:
    clock = FakeClock()
    band = Wristband("wb-1", home=HOME, clock=clock, seed=1)
    streaming = Wristband("wb-2", home=HOME, clock=clock, seed=2, accel="stream", accel_window_s=4.0)
    pager = Pager("pg-1", clock=clock, seed=3, calls_per_day=3)
    meter = GlucoseMeter("gl-1", clock=clock, seed=4, error_rate=0.2)
    meter_mg = GlucoseMeter("gl-2", clock=clock, seed=5, unit="mg/dL")
    cuff = BloodPressureCuff("bp-1", clock=clock, seed=6, error_rate=0.2)
    devices: list[SimulatedDevice] = [band, pager, meter, meter_mg, cuff]
    actions = {
        30: band.sos,
        31: band.cancel,
        60: lambda: band.fall(recover_after_s=40),
        200: band.wander,
        320: band.bring_home,
        400: band.take_off,
        430: band.put_on,
        500: lambda: band.walk_to("market"),
        600: pager.sos,
        601: pager.cancel,
        700: meter.hypoglycaemia,
        701: meter_mg.hypoglycaemia,
        702: cuff.crisis,
        703: lambda: meter.error("E-5"),
        704: cuff.error,
    }
    messages = run_for(devices, clock, hours=30, actions=actions)
    stream_clock = FakeClock(T0)
    streaming.clock = stream_clock
    messages += run_for(
        [streaming],
        stream_clock,
        hours=0.5,
        step_s=10,
        actions={10: streaming.fall, 40: streaming.get_up, 100: lambda: streaming.fall(20)},
    )
    records, rejects = decoded(messages)
    assert rejects == []
    assert len(records) == len(messages)
    kinds = Counter((m.topic.split("/")[2], m.channel) for m in messages)
    assert kinds.keys() >= {
        ("wristband", "telemetry"),
        ("wristband", "event"),
        ("wristband", "status"),
        ("pager", "event"),
        ("pager", "status"),
        ("glucose", "telemetry"),
        ("glucose", "event"),
        ("glucose", "status"),
        ("bp", "telemetry"),
        ("bp", "event"),
        ("bp", "status"),
    }
    events = Counter(getattr(r, "event", None) for r in records)
    assert events["sos"] == 2 and events["cancel"] == 2 and events["fall"] == 3 and events["removed"] >= 2
    # one device never sends two readings for the same table in the same millisecond
    keys = Counter((m.topic.rsplit("/", 1)[0], m.channel, m.ts_ms) for m in messages if m.channel != "event")
    assert max(keys.values()) == 1


def test_will_payload_is_the_contract_offline_status() -> None:
    route = route_topic("eldercare/v1/pager/pg-1/status")
    assert not isinstance(route, Rejected)
    (status,) = decode_payload(WILL_PAYLOAD, route, T0)  # type: ignore[misc]
    assert isinstance(status, DeviceStatus)
    assert WILL_PAYLOAD == b'{"online":false}' and status.online is False and status.ts is None


def wristband_day(seed: int, **kw: Any) -> tuple[Wristband, list[WristbandTelemetry]]:
    clock = FakeClock(T0)
    band = Wristband("wb-day", home=HOME, clock=clock, seed=seed, accel="off", **kw)
    readings = [r for r in decoded(run_for([band], clock, hours=24))[0] if isinstance(r, WristbandTelemetry)]
    return band, readings


def test_a_wristband_day_looks_like_an_elder_s_day() -> None:
    _, readings = wristband_day(7)
    hour = {id(r): ((r.ts if isinstance(r.ts, int) else 0) / 3_600_000 + 8) % 24 for r in readings}
    night = [r.hr for r in readings if r.hr is not None and 1 <= hour[id(r)] < 5]
    outdoors = [r for r in readings if r.gps_acc_m is not None and r.gps_acc_m < 20]
    walking_hr = [r.hr for r in outdoors if r.hr is not None]
    assert night and walking_hr
    assert np.mean(night) + 12 < np.mean(walking_hr)  # asleep vs walking about
    assert all(90 <= (r.spo2 or 95) <= 100 for r in readings)
    # outdoors: accurate fixes away from home; at home: no fix or a coarse one
    far = [r for r in outdoors if r.lat is not None and r.lon is not None and distance_m(HOME, (r.lat, r.lon)) > 150]
    assert far, "the elder goes out (park, market) during the day"
    home_fixes = [r for r in readings if r.gps_acc_m is not None and r.gps_acc_m >= 20]
    assert home_fixes and len(home_fixes) < len([r for r in readings if r.lat is None])
    # steps rise during the day and start again at midnight; the band comes off to charge
    steps = [r.steps for r in readings if r.steps is not None]
    assert max(steps) > 2000 and min(steps) < 300
    assert any(r.worn is False for r in readings)
    charging = [r.battery for r in readings if r.worn is False]
    assert charging[-1] is not None and charging[0] is not None and charging[-1] > charging[0]


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    dn = (b[0] - a[0]) * paths.M_PER_DEG_LAT
    de = (b[1] - a[1]) * 111_320 * math.cos(math.radians(a[0]))
    return math.hypot(de, dn)


def test_walks_follow_the_streets_and_a_wander_leaves_the_fence() -> None:
    rng = np.random.default_rng(3)
    places = paths.neighbourhood(rng)
    route = paths.street_route((0.0, 0.0), (places["market"].east_m, places["market"].north_m), rng)
    legs = np.diff(route, axis=0)
    assert (np.min(np.abs(legs), axis=1) < 10).all(), "every leg runs along a street (no cutting across blocks)"
    clock = FakeClock(T0 + 10 * 3_600_000)  # a weekday morning in Shanghai
    band = Wristband("wb-wander", home=HOME, clock=clock, seed=4, accel="off")
    band.wander()
    clock.t += 20 * 60_000
    assert distance_m(HOME, band.position()) > 300
    band.bring_home()
    clock.t += 3 * 3_600_000
    assert distance_m(HOME, band.position()) < 1


def detector_scores(signals: list[accel.Signal], params: FallModelParams) -> tuple[int, int]:
    """(falls reported, candidates evaluated) for recordings streamed in 1 s windows, as the gateway would."""
    fired = evaluated = 0
    for sig in signals:
        det = FallDetector(1, params, collect_candidates=True)
        for k in range(0, sig.shape[0], 50):
            found = det.update([0], [k * 20], [sig[k : k + 50]])
            fired += len(found)
            evaluated += len(found.evaluated) if found.evaluated is not None else 0
    return fired, evaluated


def test_synthetic_falls_are_detected_and_everyday_movement_is_not() -> None:
    params = FallModelParams.load()
    falls = [accel.fall(np.random.default_rng(s)).samples for s in range(30)]
    falls += [accel.fall(np.random.default_rng(100 + s), recover_after_s=8).samples for s in range(10)]
    fired, _ = detector_scores(falls, params)
    assert fired == len(falls)
    walks = [accel.walking(60, np.random.default_rng(s)) for s in range(5)]
    walks += [accel.walking(60, np.random.default_rng(s), heel_strike_g=1.4) for s in range(5, 8)]
    fired, evaluated = detector_scores(walks, params)
    assert fired == 0 and evaluated > 20, "hard heel strikes pass the gate; the model has to reject them"
    sits = [accel.sitting_down(np.random.default_rng(s)) for s in range(30)]
    fired, evaluated = detector_scores(sits, params)
    assert fired == 0 and evaluated > 5


def test_the_window_a_band_uploads_after_a_fall_is_detected_from_its_payload() -> None:
    params = FallModelParams.load()
    clock = FakeClock(T0 + 10 * 3_600_000)
    band = Wristband("wb-fall", home=HOME, clock=clock, seed=9, band_detects_falls=False)
    band.fall()
    assert [m for m in band.advance(clock.t) if b"accel" in m.payload] == []  # not before the 5 s after
    clock.t += 6_000
    windows = [
        r for r in decoded(band.advance(clock.t))[0] if isinstance(r, WristbandTelemetry) and r.accel is not None
    ]
    assert len(windows) == 1
    window = windows[0]
    assert window.accel is not None and window.accel.rate_hz == 50
    det = FallDetector(1, params)
    assert isinstance(window.ts, int)
    found = det.update([0], [window.ts], [np.asarray(window.accel.samples, np.float32)])
    assert len(found) == 1
    assert abs(int(found.t_ms[0]) - (clock.t - 6_000)) <= 40  # the impact is when the elder fell


def test_meters_read_at_routine_times_and_show_the_modes() -> None:
    clock = FakeClock()
    meter = GlucoseMeter("gl-1", clock=clock, seed=1, control_mmol=6.0, error_rate=0.0)
    cuff = BloodPressureCuff("bp-1", clock=clock, seed=2, systolic=135, diastolic=82, error_rate=0.0)
    normal, _ = decoded(run_for([meter, cuff], clock, hours=72, step_s=300))
    glucose = [r for r in normal if isinstance(r, GlucoseReading)]
    bp = [r for r in normal if isinstance(r, BloodPressureReading)]
    assert 6 <= len(glucose) <= 15 and 4 <= len(bp) <= 6  # a few a day, not a stream
    assert {r.context for r in glucose} >= {"fasting", "after_meal"}
    assert all(3.9 < r.glucose < 13 for r in glucose)
    assert all(r.systolic < 175 and r.diastolic < 110 for r in bp)
    low = decoded([meter.hypoglycaemia()])[0][0]
    crisis = decoded([cuff.crisis()])[0][0]
    assert low.glucose < 3.9  # type: ignore[attr-defined]
    assert crisis.systolic >= 180 and crisis.diastolic >= 120  # type: ignore[attr-defined]


# -- against a real broker and the real gateway -----------------------------------------------------


def registry(path: Path, devices: list[SimulatedDevice]) -> dict[str, str]:
    """A registry naming the devices (one elder at HOME), as the gateway's ``registry`` section."""
    path.write_text(
        yaml.safe_dump(
            {
                "elders": [
                    {
                        "id": "e1",
                        "name": "李秀英",
                        "home": {"lat": HOME[0], "lon": HOME[1]},
                        "devices": [{"id": d.device_id, "type": d.device_type} for d in devices],
                    }
                ]
            },
            allow_unicode=True,
        )
    )
    return {"file": str(path)}


def test_every_device_type_against_the_gateway_stores_everything(
    gateway: GatewayRunner, broker: LocalMosquitto, database: str
) -> None:
    band = Wristband("wb-live", home=HOME, interval_s=1.0, seed=1)
    pager = Pager("pg-live", seed=2)
    meter = GlucoseMeter("gl-live", seed=3)
    cuff = BloodPressureCuff("bp-live", seed=4)
    devices: list[SimulatedDevice] = [band, pager, meter, cuff]
    gateway.start(registry=registry(gateway.workdir / "registry.yaml", devices))
    try:
        for d in devices:
            d.connect("127.0.0.1", broker.port)
        band.step()
        pager.sos()
        pager.cancel()
        meter.measure("fasting")
        meter.error()
        cuff.measure()
        band.fall()
        for _ in range(70):  # 7 s: the fall window is sent once the 5 s after the impact are in
            band.step()
            time.sleep(0.1)
        for d in devices:
            assert d.connection is not None and d.connection.flush(10)
    finally:
        for d in devices:
            d.close()
    sent = [m for d in devices for m in d.sent]
    expect = Counter(
        {
            "telemetry_wristband": 0,
            "wristband_accel": 0,
            "telemetry_glucose": 0,
            "telemetry_bp": 0,
            "device_events": 0,
            "device_status": 0,
        }
    )
    for m in sent:
        table = {"event": "device_events", "status": "device_status"}.get(m.channel) or {
            "wristband": "telemetry_wristband",
            "glucose": "telemetry_glucose",
            "bp": "telemetry_bp",
        }[m.topic.split("/")[2]]
        expect[table] += 1
        if b'"accel"' in m.payload:
            expect["wristband_accel"] += 1
    assert expect["wristband_accel"] == 1 and expect["device_events"] >= 4
    for table, n in expect.items():
        wait_until(lambda t=table, n=n: count(database, t) == n, 20, f"{n} rows in {table}")  # type: ignore[misc]
    assert count(database, "dead_letters") == 0
    events = query(database, "SELECT device_id, event FROM device_events ORDER BY time")
    assert {("pg-live", "sos"), ("pg-live", "cancel"), ("wb-live", "fall"), ("gl-live", "error")} <= set(events)
    # a fall of a registered elder: the gateway asks the band "are you OK?", the band confirms it showed it
    asked = [c.command.cmd for c in band.commands if c.command is not None]
    assert asked.count("confirm") == sum(1 for e in events if e == ("wb-live", "received"))


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[LocalMosquitto, BrokerCredentials, str, dict[str, str]]]:
    creds = BrokerCredentials(tmp_path / "eldercare.passwd", tmp_path / "eldercare.acl")
    gw_password = creds.add_gateway()
    passwords = {d: creds.add_device(d, t) for d, t in (("wb-7", "wristband"), ("pg-7", "pager"))}
    broker = LocalMosquitto(
        tmp_path / "mosquitto",
        anonymous=False,
        extra_config=[f"password_file {creds.passwd_file}", f"acl_file {creds.acl_file}"],
    )
    broker.start()
    try:
        yield broker, creds, gw_password, passwords
    finally:
        broker.stop()


def test_credentials_will_and_help_is_coming_through_the_gateway(
    secured: tuple[LocalMosquitto, BrokerCredentials, str, dict[str, str]],
    database: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker, creds, gw_password, passwords = secured
    runner = GatewayRunner(broker_port=broker.port, dsn=database, workdir=tmp_path / "gateway")
    band = Wristband("wb-7", seed=1, interval_s=1.0)
    pager = Pager("pg-7", seed=2)
    try:
        gw = runner.start(
            mqtt={"username": creds.gateway_user, "password": gw_password},
            registry=registry(tmp_path / "registry.yaml", [band, pager]),
        )
        # a device with the wrong password is refused and says so
        impostor = Wristband("wb-7", seed=1)
        with caplog.at_level(logging.ERROR, "simulators.devices"), pytest.raises(DeviceRefused) as refused:
            impostor.connect("127.0.0.1", broker.port, password="not-the-password", wait_s=5)
        impostor.close()
        assert "wb-7" in str(refused.value) and refused.value.reason
        assert any("refused" in r.message and "wb-7" in r.message for r in caplog.records)
        assert "not-the-password" not in caplog.text

        band.connect("127.0.0.1", broker.port, password=passwords["wb-7"], backoff_s=(1, 2))
        pager.connect("127.0.0.1", broker.port, password=passwords["pg-7"])
        band.step()
        wait_until(lambda: count(database, "device_status") >= 2, 15, "online status of both devices")

        # help is coming: sent by the gateway's own account, shown and confirmed by each device
        loop = runner._loop
        assert loop is not None
        for device, code in ((band, "A17"), (pager, "A18")):
            payload = f'{{"cmd": "help_coming", "alert": "{code}", "by": "王芳", "vibrate": "reassure"}}'.encode()
            asyncio.run_coroutine_threadsafe(
                gw.mqtt.publish(f"eldercare/v1/{device.device_type}/{device.device_id}/cmd", payload), loop
            ).result(10)
        wait_until(lambda: len(band.commands) == 1 and len(pager.commands) == 1, 10, "commands at the devices")
        command = band.commands[0].command
        assert command is not None and command.cmd == "help_coming" and command.by == "王芳"

        def receipts() -> list[tuple[Any, ...]]:
            return query(
                database, "SELECT device_id, detail FROM device_events WHERE event = 'received' ORDER BY device_id"
            )

        wait_until(lambda: len(receipts()) == 2, 15, "both receipts stored")
        assert receipts() == [("pg-7", "A18"), ("wb-7", "A17")]

        # the network drops: the broker publishes the will, the gateway stores the device offline
        band.drop()
        wait_until(
            lambda: (
                query(database, "SELECT count(*) FROM device_status WHERE device_id = 'wb-7' AND online = false")[0][0]
                == 1
            ),
            15,
            "the will stored",
        )
        connection = band.connection
        assert connection is not None
        wait_until(lambda: connection.connected and connection.connects == 2, 15, "reconnected with back-off")
        assert connection.drops == 1
        wait_until(
            lambda: (
                query(database, "SELECT count(*) FROM device_status WHERE device_id = 'wb-7' AND online")[0][0] == 2
            ),
            15,
            "online again",
        )
        band.close()
        pager.close()
        assert count(database, "dead_letters") == 0
    finally:
        runner.stop()
