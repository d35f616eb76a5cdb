"""Start-up with a full spool, broker restarts, and a graceful SIGTERM."""

from __future__ import annotations

import json
import signal
import time

from gateway.pipeline.batch import RawBatch
from gateway.storage.spool import DiskSpool
from simulators.services.mosquitto import LocalMosquitto
from tests.support import GatewayRunner, Publisher, count, ingest_connected, query, wait_until


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_restart_with_a_non_empty_spool_replays_it_first(gateway: GatewayRunner, database: str) -> None:
    t = now_ms()
    spool = DiskSpool(gateway.workdir / "spool")
    for b in range(3):
        topics = [b"eldercare/v1/pager/pg-1/event", b"eldercare/v1/wristband/wb-1/telemetry"]
        payloads = [
            json.dumps({"ts": t + b, "event": "sos"}).encode(),
            json.dumps({"ts": t + b, "hr": 60 + b}).encode(),
        ]
        spool.append(RawBatch(topics, payloads, [0, 0], [False, False], t))
    gw = gateway.start()
    wait_until(lambda: count(database, "telemetry_wristband") == 3, what="spooled readings stored")
    assert count(database, "device_events") == 3
    wait_until(lambda: gw.spool.is_empty(), what="spool emptied")
    assert gw.stats.replayed_messages == 6


def test_gateway_reconnects_after_a_broker_restart_and_loses_nothing(
    gateway: GatewayRunner, broker: LocalMosquitto, database: str
) -> None:
    gw = gateway.start()
    t = now_ms()
    pub = Publisher(broker.port)
    pub.publish_many(
        [
            (f"eldercare/v1/wristband/wb-{i % 9}/telemetry", json.dumps({"ts": t + i, "hr": 70}).encode())
            for i in range(300)
        ]
    )
    pub.close()
    wait_until(lambda: count(database, "telemetry_wristband") == 300, what="first readings")
    connects = gw.mqtt.connects
    broker.restart()  # same port, same persistence directory: our session survives
    wait_until(lambda: gw.mqtt.connects > connects, timeout_s=30, what="gateway reconnected")
    pub = Publisher(broker.port)
    pub.publish_many(
        [
            (f"eldercare/v1/wristband/wb-{i % 9}/telemetry", json.dumps({"ts": t + 1000 + i, "hr": 71}).encode())
            for i in range(300)
        ]
    )
    pub.close()
    wait_until(lambda: count(database, "telemetry_wristband") == 600, what="readings after restart")


def test_sigterm_flushes_and_exits_cleanly(gateway: GatewayRunner, broker: LocalMosquitto, database: str) -> None:
    proc = gateway.start_process()
    wait_until(lambda: ingest_connected(gateway.log_text()), what="gateway connected")
    t = now_ms()
    pub = Publisher(broker.port)
    pub.publish_many(
        [
            (
                f"eldercare/v1/bp/bp-{i % 5}/telemetry",
                json.dumps({"ts": t + i, "systolic": 120, "diastolic": 80}).encode(),
            )
            for i in range(2000)
        ]
    )
    pub.close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    gateway.process = None
    assert "stopping: flushing what is held" in gateway.log_text()
    assert "Traceback" not in gateway.log_text()
    # whatever was not stored before exit is still queued for our session: nothing lost
    gateway.start_process()
    wait_until(lambda: count(database, "telemetry_bp") == 2000, what="every cuff reading")
    assert query(database, "SELECT count(DISTINCT (device_id, time)) FROM telemetry_bp") == [(2000,)]
