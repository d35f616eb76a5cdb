"""End to end over real Mosquitto and PostgreSQL: publish, then read the rows back."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

from tests.support import GatewayRunner, Publisher, count, query, wait_until


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def as_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def test_each_device_type_lands_in_its_table_with_every_field(
    gateway: GatewayRunner, publisher: Publisher, database: str
) -> None:
    gateway.start()
    t = now_ms()
    publisher.publish(
        "eldercare/v1/wristband/wb-1/telemetry",
        json.dumps(
            {
                "ts": t,
                "lat": 31.2304,
                "lon": 121.4737,
                "gps_acc_m": 8.5,
                "hr": 72,
                "spo2": 97,
                "steps": 1234,
                "battery": 81.5,
                "worn": True,
            }
        ),
    )
    publisher.publish(
        "eldercare/v1/wristband/wb-1/telemetry",
        json.dumps(
            {
                "ts": t + 1,
                "hr": 70,
                "accel": {"rate_hz": 50, "samples": [[0.0, 0.0, 1.0], [0.1, -0.2, 0.98]]},
            }
        ),
    )
    publisher.publish(
        "eldercare/v1/glucose/gl-1/telemetry",
        json.dumps({"ts": t, "glucose": 72, "unit": "mg/dL", "context": "fasting"}),
    )
    publisher.publish(
        "eldercare/v1/bp/bp-1/telemetry",
        json.dumps({"ts": t, "systolic": 182, "diastolic": 121, "pulse": 88, "irregular": True}),
    )
    publisher.publish("eldercare/v1/pager/pg-1/event", json.dumps({"ts": t, "event": "sos"}))
    publisher.publish("eldercare/v1/wristband/wb-1/event", json.dumps({"ts": t, "event": "fall"}))
    publisher.publish(
        "eldercare/v1/pager/pg-1/status",
        json.dumps({"ts": t, "battery": 55, "rssi_dbm": -71, "firmware": "1.2.3", "online": True}),
    )

    wait_until(lambda: count(database, "device_status") == 1, what="status row")
    wait_until(lambda: count(database, "telemetry_wristband") == 2, what="wristband rows")

    rows = query(
        database,
        "SELECT time, device_id, lat, lon, gps_acc_m, hr, spo2, steps, battery, "
        "worn FROM telemetry_wristband ORDER BY time",
    )
    assert rows[0] == (as_dt(t), "wb-1", 31.2304, 121.4737, 8.5, 72.0, 97.0, 1234, 81.5, True)
    assert rows[1] == (as_dt(t + 1), "wb-1", None, None, None, 70.0, None, None, None, None)
    accel = query(database, "SELECT device_id, rate_hz, samples FROM wristband_accel")
    assert accel[0][0] == "wb-1" and accel[0][1] == 50.0
    import numpy as np

    samples = np.frombuffer(accel[0][2], "<f4").reshape(-1, 3)
    assert np.allclose(samples, [[0, 0, 1], [0.1, -0.2, 0.98]])
    glucose = query(database, "SELECT time, device_id, glucose_mmol, context FROM telemetry_glucose")
    assert glucose == [(as_dt(t), "gl-1", pytest.approx(4.0), "fasting")]
    bp = query(database, "SELECT device_id, systolic, diastolic, pulse, irregular FROM telemetry_bp")
    assert bp == [("bp-1", 182.0, 121.0, 88.0, True)]
    events = query(database, "SELECT device_id, device_type, event FROM device_events ORDER BY 1")
    assert events == [("pg-1", "pager", "sos"), ("wb-1", "wristband", "fall")]
    status = query(database, "SELECT device_id, device_type, battery, rssi_dbm, firmware, online FROM device_status")
    assert status == [("pg-1", "pager", 55.0, -71.0, "1.2.3", True)]
    assert count(database, "dead_letters") == 0


def test_senml_and_json_give_the_same_row(gateway: GatewayRunner, publisher: Publisher, database: str) -> None:
    gateway.start()
    t = now_ms()
    publisher.publish(
        "eldercare/v1/wristband/wb-json/telemetry",
        json.dumps({"ts": t, "lat": 31.2, "lon": 121.5, "hr": 64, "spo2": 95, "battery": 40, "worn": True}),
    )
    publisher.publish(
        "eldercare/v1/wristband/wb-senml/telemetry",
        json.dumps(
            [
                {"bn": "urn:dev:wb-senml:", "bt": t / 1000, "n": "lat", "u": "lat", "v": 31.2},
                {"n": "lon", "u": "lon", "v": 121.5},
                {"n": "hr", "u": "beat/min", "v": 64},
                {"n": "spo2", "u": "%", "v": 95},
                {"n": "battery", "u": "%EL", "v": 40},
                {"n": "worn", "vb": True},
            ]
        ),
    )
    publisher.publish(
        "eldercare/v1/glucose/gl-json/telemetry", json.dumps({"ts": t, "glucose": 6.1, "context": "after_meal"})
    )
    publisher.publish(
        "eldercare/v1/glucose/gl-senml/telemetry",
        json.dumps(
            [
                {"bn": "gl-senml/", "bt": t / 1000, "n": "glucose", "u": "mmol/L", "v": 6.1},
                {"n": "context", "vs": "after_meal"},
            ]
        ),
    )
    wait_until(lambda: count(database, "telemetry_wristband") == 2, what="both wristband rows")
    wait_until(lambda: count(database, "telemetry_glucose") == 2, what="both glucose rows")
    wb = query(
        database,
        "SELECT device_id, time, lat, lon, gps_acc_m, hr, spo2, steps, battery, worn "
        "FROM telemetry_wristband ORDER BY device_id",
    )
    assert wb[0][1:] == wb[1][1:]
    gl = query(database, "SELECT device_id, time, glucose_mmol, context FROM telemetry_glucose ORDER BY device_id")
    assert gl[0][1:] == gl[1][1:]
    assert count(database, "dead_letters") == 0
