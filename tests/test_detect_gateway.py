"""Detection inside the running gateway: registry file in, detections stored with the batch."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psycopg
import yaml
from psycopg.types.json import Jsonb

from gateway.domain.registry_db import load_registry_from_db
from simulators.services.postgres import LocalPostgres
from tests.support import GatewayRunner, Publisher, count, query, wait_until

REGISTRY = {
    "elders": [
        {
            "id": "e-001",
            "name": "王秀英",
            "community": "幸福社区",
            "grid": "g-3",
            "lives_alone": True,
            "conditions": ["diabetes"],
            "home": {"lat": 31.2304, "lon": 121.4737},
            "thresholds": {"glucose_warning_low": 4.2},
            "fences": [{"id": "home", "circle": {"lat": 31.2304, "lon": 121.4737, "radius_m": 200}}],
            "devices": [
                {"id": "pg-001", "type": "pager"},
                {"id": "gl-001", "type": "glucose"},
                {"id": "wb-001", "type": "wristband", "reporting_interval_s": 1},
            ],
        }
    ]
}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def write_registry(tmp_path: Path) -> Path:
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(REGISTRY, allow_unicode=True))
    return path


def test_sos_and_low_glucose_are_detected_and_stored_with_their_batch(
    gateway: GatewayRunner, publisher: Publisher, database: str, tmp_path: Path
) -> None:
    gw = gateway.start(registry={"file": str(write_registry(tmp_path))})
    t = now_ms()
    publisher.publish("eldercare/v1/pager/pg-001/event", json.dumps({"ts": t, "event": "sos"}))
    publisher.publish(
        "eldercare/v1/glucose/gl-001/telemetry", json.dumps({"ts": t, "glucose": 4.0, "context": "fasting"})
    )
    wait_until(lambda: count(database, "detections") >= 2, what="two detections stored")
    rows = query(
        database, "SELECT elder_id, device_id, kind, severity, cleared, evidence FROM detections ORDER BY kind"
    )
    assert [(r[0], r[2], r[3]) for r in rows] == [("e-001", "hypoglycaemia", "warning"), ("e-001", "sos", "critical")]
    assert rows[0][5]["glucose"] == 4.0  # the personal threshold (4.2) fired, with evidence
    assert gw.stats.detections == {"sos": 1, "hypoglycaemia": 1}
    # the registry file was imported, so the database now holds it too
    with psycopg.connect(database) as conn:
        loaded = load_registry_from_db(conn)
    assert [e.id for e in loaded.elders] == ["e-001"]
    assert loaded.elders[0].thresholds == {"glucose_warning_low": 4.2}
    assert [d.id for d in loaded.elders[0].devices] == ["gl-001", "pg-001", "wb-001"]


def test_silent_band_is_found_by_the_timer_without_any_message(
    gateway: GatewayRunner, publisher: Publisher, database: str, tmp_path: Path
) -> None:
    gateway.start(registry={"file": str(write_registry(tmp_path))}, detect={"silent_factor": 2.0, "tick_s": 0.2})
    publisher.publish("eldercare/v1/wristband/wb-001/telemetry", json.dumps({"ts": now_ms(), "hr": 70}))
    wait_until(
        lambda: query(database, "SELECT kind FROM detections") == [("device_silent",)],
        timeout_s=15,
        what="device_silent from the timer",
    )


def test_detections_made_while_the_database_is_down_are_stored_when_it_returns(
    gateway: GatewayRunner,
    publisher: Publisher,
    database: str,
    tmp_path: Path,
    postgres_server: LocalPostgres,
) -> None:
    gw = gateway.start(registry={"file": str(write_registry(tmp_path))})
    postgres_server.stop("fast")
    try:
        publisher.publish("eldercare/v1/pager/pg-001/event", json.dumps({"ts": now_ms(), "event": "sos"}))
        wait_until(lambda: gw.stats.detections.get("sos") == 1, what="SOS detected during the outage")
        wait_until(lambda: gw.stats.spooled_messages >= 1, what="SOS spooled")
    finally:
        postgres_server.start()
    wait_until(
        lambda: query(database, "SELECT kind, elder_id FROM detections") == [("sos", "e-001")],
        timeout_s=30,
        what="the SOS detection stored after the outage",
    )
    assert count(database, "device_events") == 1


def test_a_fence_changed_in_the_database_is_used_without_a_restart(
    gateway: GatewayRunner, publisher: Publisher, database: str, tmp_path: Path
) -> None:
    """The console edits fences in the database; the running detectors pick the edit up."""
    gw = gateway.start(
        registry={"file": str(write_registry(tmp_path)), "reload_s": 0.3},
        detect={"fence_dwell_readings": 2, "fence_dwell_s": 1},
    )
    # 500 m east of home: inside a 1 km fence, outside the old 200 m one
    lon = 121.4737 + 500 / (111_320 * 0.855)
    small = {"id": "home", "circle": {"lat": 31.2304, "lon": 121.4737, "radius_m": 1000}}
    with psycopg.connect(database) as conn:
        conn.execute("UPDATE geofences SET spec = %s WHERE elder_id = 'e-001'", (Jsonb(small),))
    wait_until(lambda: gw.registry_reloads >= 1, timeout_s=10, what="the new fence loaded")
    t = now_ms()
    publisher.publish_many(
        [
            (
                "eldercare/v1/wristband/wb-001/telemetry",
                json.dumps({"ts": t + i * 1000, "lat": 31.2304, "lon": lon, "gps_acc_m": 8}).encode(),
            )
            for i in range(5)
        ]
    )
    wait_until(lambda: count(database, "telemetry_wristband") == 5, what="positions stored")
    time.sleep(0.5)
    assert query(database, "SELECT count(*) FROM detections WHERE kind = 'geofence_exit'") == [(0,)]
    # now shrink it to 100 m: the same position is outside
    tight = {"id": "home", "circle": {"lat": 31.2304, "lon": 121.4737, "radius_m": 100}}
    with psycopg.connect(database) as conn:
        conn.execute("UPDATE geofences SET spec = %s WHERE elder_id = 'e-001'", (Jsonb(tight),))
    time.sleep(1.5)  # a few reload periods
    publisher.publish_many(
        [
            (
                "eldercare/v1/wristband/wb-001/telemetry",
                json.dumps({"ts": t + 10_000 + i * 1000, "lat": 31.2304, "lon": lon, "gps_acc_m": 8}).encode(),
            )
            for i in range(5)
        ]
    )
    wait_until(
        lambda: query(database, "SELECT count(*) FROM detections WHERE kind = 'geofence_exit'") == [(1,)],
        what="the exit detected against the edited fence",
    )
