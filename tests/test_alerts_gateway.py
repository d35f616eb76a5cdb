"""Alerts through the running gateway: MQTT in, pages in the outbox, commands to the band, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from simulators.services.mosquitto import LocalMosquitto
from tests.support import REPO, CommandListener, GatewayRunner, Publisher, count, query, wait_until

REGISTRY: dict[str, Any] = {
    "elders": [
        {
            "id": "e1",
            "name": "王秀英",
            "community": "幸福社区",
            "grid": "g1",
            "home": {"lat": 31.2304, "lon": 121.4737},
            "contacts": [{"name": "王强", "phone": "+8613800000001", "relation": "son"}],
            "devices": [{"id": "wb-1", "type": "wristband"}, {"id": "pg-1", "type": "pager"}],
        }
    ],
    "responders": [
        {"id": "grid", "name": "王芳", "role": "grid_worker", "phone": "+8613900000001", "grid": "g1"},
        {"id": "hotline", "name": "热线", "role": "hotline", "phone": "+8640000000001"},
    ],
}


def test_sos_to_pages_fall_asks_the_elder_and_the_cli_takes_and_closes(
    gateway: GatewayRunner, publisher: Publisher, broker: LocalMosquitto, database: str, tmp_path: Path
) -> None:
    registry = tmp_path / "registry.yaml"
    registry.write_text(yaml.safe_dump(REGISTRY, allow_unicode=True))
    gateway.start(registry={"file": str(registry)})
    band = CommandListener(broker.port)
    try:
        t = time.time_ns() // 1_000_000
        publisher.publish("eldercare/v1/pager/pg-1/event", json.dumps({"ts": t, "event": "sos"}))
        pages = wait_until(
            lambda: query(
                database, "SELECT recipient_name, channel, role FROM notifications WHERE purpose = 'page' ORDER BY id"
            ),
            what="SOS pages",
        )
        # the shipped SOS policy pages family and the grid worker at once, no confirmation window
        assert {(n, r) for n, _, r in pages} == {("王强", "family"), ("王芳", "grid_worker")}
        publisher.publish("eldercare/v1/wristband/wb-1/event", json.dumps({"ts": t + 5, "event": "fall"}))
        wait_until(lambda: "confirm" in band.commands(), what="'are you OK?' sent to the band")
        code = query(database, "SELECT code FROM alerts WHERE kind = 'sos'")[0][0]

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "gateway.cli", "-c", str(gateway.workdir / "config.yaml"), *args],
                capture_output=True,
                text=True,
                cwd=REPO,
                timeout=60,
            )

        listed = cli("alerts", "list")
        assert code in listed.stdout and "sos" in listed.stdout and "王秀英" in listed.stdout
        taken = cli("alerts", "ack", code, "--by", "王芳", "--eta-min", "8")
        assert taken.returncode == 0 and "is now acknowledged (taken by 王芳)" in taken.stdout
        wait_until(lambda: "help_coming" in band.commands(), what="'help is coming' on the band")
        done = cli("alerts", "resolve", code, "--by", "王芳", "--outcome", "handled_at_home")
        assert done.returncode == 0, done.stderr
        assert cli("alerts", "resolve", code, "--by", "x", "--outcome", "other").returncode == 1
        month = time.strftime("%Y-%m")
        report = cli("report", "responses", "--month", month)
        assert report.returncode == 0, report.stderr
        assert "幸福社区" in report.stdout and "total: 2 alerts, 1 acknowledged" in report.stdout
        vitals = cli("report", "vitals", "--month", month)
        assert vitals.returncode == 0, vitals.stderr
        assert vitals.stdout.startswith(f"vitals for {month}") and "elders with readings" in vitals.stdout
        bad = cli("report", "vitals", "--month", "2026-13")
        assert bad.returncode == 2 and "2026-13" in bad.stderr and not bad.stdout
    finally:
        band.close()


def test_a_topic_of_another_type_than_the_registered_one_is_a_dead_letter(
    gateway: GatewayRunner, publisher: Publisher, database: str, tmp_path: Path
) -> None:
    """Without the broker's per-type ACL: wristband wb-1 posing as a pager (SOS) or a glucose meter (2.1 mmol/L)."""
    registry = tmp_path / "registry.yaml"
    registry.write_text(yaml.safe_dump(REGISTRY, allow_unicode=True))
    gateway.start(registry={"file": str(registry)})
    t = time.time_ns() // 1_000_000
    publisher.publish("eldercare/v1/pager/wb-1/event", json.dumps({"ts": t, "event": "sos"}))
    publisher.publish("eldercare/v1/glucose/wb-1/telemetry", json.dumps({"ts": t, "glucose": 2.1}))
    publisher.publish("eldercare/v1/wristband/pg-1/event", json.dumps({"ts": t, "event": "sos"}))
    wait_until(lambda: count(database, "dead_letters") == 3, what="three dead letters")
    letters = query(database, "SELECT topic, reason FROM dead_letters ORDER BY topic")
    assert [topic for topic, _ in letters] == [
        "eldercare/v1/glucose/wb-1/telemetry",
        "eldercare/v1/pager/wb-1/event",
        "eldercare/v1/wristband/pg-1/event",
    ]
    assert "registered as a wristband, not a glucose" in letters[0][1]
    # the band's own SOS still works, and is the only alert
    publisher.publish("eldercare/v1/wristband/wb-1/event", json.dumps({"ts": t + 1, "event": "sos"}))
    wait_until(lambda: query(database, "SELECT 1 FROM alerts"), what="the band's own SOS")
    time.sleep(0.5)
    assert query(database, "SELECT kind, device_id FROM alerts") == [("sos", "wb-1")]
    assert query(database, "SELECT count(*) FROM telemetry_glucose")[0][0] == 0
    assert query(database, "SELECT device_id, device_type FROM device_events") == [("wb-1", "wristband")]
