"""/metrics and /readyz of a running gateway reflect what it did and what it can reach."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from simulators.services.postgres import LocalPostgres
from tests.support import GatewayRunner, Publisher, count, wait_until


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_metrics_count_ingest_rejects_and_detections_and_readyz_follows_the_database(
    gateway: GatewayRunner, publisher: Publisher, database: str, postgres_server: LocalPostgres
) -> None:
    gw = gateway.start()
    port = gw.http_port
    t = time.time_ns() // 1_000_000
    publisher.publish_many(
        [(f"eldercare/v1/wristband/wb-{i}/telemetry", json.dumps({"ts": t, "hr": 70}).encode()) for i in range(20)]
    )
    publisher.publish("eldercare/v1/wristband/wb-x/telemetry", b'{"ts": 1, "spo2": 140}')
    publisher.publish("eldercare/v1/pager/pg-1/event", json.dumps({"ts": t, "event": "sos"}))
    wait_until(
        lambda: count(database, "telemetry_wristband") == 20 and count(database, "dead_letters") == 1,
        what="rows and the dead letter",
    )
    wait_until(lambda: "eldercare_open_alerts" in get(port, "/metrics")[1], what="metrics served")
    status, text = get(port, "/metrics")
    assert status == 200
    lines = text.splitlines()
    assert "eldercare_ingest_messages_total 22.0" in lines
    assert "eldercare_rows_stored_total 21.0" in lines  # 20 readings and the SOS event
    assert 'eldercare_decode_rejects_total{reason="invalid payload"} 1.0' in lines
    assert 'eldercare_detections_total{kind="sos"} 1.0' in lines
    assert any(line.startswith("eldercare_db_write_ms_bucket") for line in lines)
    assert "eldercare_mqtt_connected 1.0" in lines
    wait_until(
        lambda: 'eldercare_open_alerts{severity="critical"} 1.0' in get(port, "/metrics")[1].splitlines(),
        what="the open SOS alert counted",
    )
    assert "eldercare_alert_worker_up 1.0" in get(port, "/metrics")[1].splitlines()  # it made the alert
    assert get(port, "/readyz")[0] == 200
    postgres_server.stop("fast")
    try:
        publisher.publish("eldercare/v1/wristband/wb-1/telemetry", json.dumps({"ts": t + 1, "hr": 71}))
        wait_until(lambda: get(port, "/readyz")[0] == 503, what="readyz reporting the database down")
        assert "eldercare_database_up 0.0" in get(port, "/metrics")[1].splitlines()
    finally:
        postgres_server.start()
    assert get(port, "/healthz")[0] == 200
