"""The command line: contract checker, schema export, registry import, config errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from simulators.services.mosquitto import LocalMosquitto
from tests.support import REPO, Publisher, query


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=60
    )


def test_device_check_accepts_good_and_explains_bad_payloads(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"ts": "2026-11-22T08:00:00+08:00", "hr": 70}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"ts": 1, "spo2": 140}))
    result = run("device", "check", "--topic", "eldercare/v1/wristband/wb-1/telemetry", str(good), str(bad))
    assert result.returncode == 1
    assert "good.json: ok (1 reading)" in result.stdout
    assert "bad.json: REJECTED: invalid payload: Expected `float` <= 100.0 - at `$.spo2`" in result.stdout
    assert run("device", "check", "--topic", "eldercare/v1/wristband/wb-1/telemetry", str(good)).returncode == 0


def test_device_schema_prints_every_contract() -> None:
    result = run("device", "schema")
    schemas = json.loads(result.stdout)
    assert {"wristband/telemetry", "pager/event", "glucose/telemetry", "bp/telemetry"} <= set(schemas)


def test_registry_import_and_a_bad_registry(tmp_path: Path, database: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"database": {"dsn": database}}))
    registry = tmp_path / "registry.yaml"
    registry.write_text(
        yaml.safe_dump(
            {
                "elders": [
                    {
                        "id": "e1",
                        "name": "李建国",
                        "devices": [{"id": "wb-1", "type": "wristband"}],
                        "fences": [{"id": "home", "circle": {"lat": 31.2, "lon": 121.4, "radius_m": 150}}],
                    }
                ]
            },
            allow_unicode=True,
        )
    )
    result = run("-c", str(config), "registry", "import", str(registry))
    assert result.returncode == 0, result.stderr
    assert "imported 1 elders, 1 devices, 1 fences" in result.stdout
    assert query(database, "SELECT elder_id, name FROM elders") == [("e1", "李建国")]
    registry.write_text(yaml.safe_dump({"elders": [{"id": "e2", "name": "x", "thresholds": {"hr_max": 1}}]}))
    bad = run("-c", str(config), "registry", "import", str(registry))
    assert bad.returncode == 2
    assert "elder e2: unknown threshold(s) ['hr_max']" in bad.stderr


def test_config_error_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("detect:\n  night: 25:00-06:00\n")
    result = run("-c", str(config), "db", "upgrade")
    assert result.returncode == 2
    assert "detect.night" in result.stderr


def test_device_check_live_watches_a_device_and_rejects_what_breaks_the_contract(
    broker: LocalMosquitto, publisher: Publisher, capsys: pytest.CaptureFixture[str]
) -> None:
    import threading
    import time

    from gateway.cli import main

    codes: list[int] = []
    watcher = threading.Thread(
        target=lambda: codes.append(
            main(
                [
                    "device",
                    "check",
                    "--live",
                    "--device",
                    "wb-77",
                    "--broker",
                    f"127.0.0.1:{broker.port}",
                    "--seconds",
                    "10",
                    "--count",
                    "2",
                ]
            )
        )
    )
    watcher.start()
    time.sleep(1.5)  # subscribed
    now = time.time_ns() // 1_000_000
    publisher.publish("eldercare/v1/wristband/wb-77/telemetry", f'{{"ts": {now}, "hr": 71}}')
    publisher.publish("eldercare/v1/wristband/wb-77/telemetry", f'{{"ts": {now}, "spo2": 140}}')
    publisher.publish("eldercare/v1/wristband/wb-78/telemetry", f'{{"ts": {now}, "hr": 71}}')  # not watched
    watcher.join(20)
    out = capsys.readouterr().out
    assert codes == [1]
    assert "ok        eldercare/v1/wristband/wb-77/telemetry" in out
    assert "REJECTED  eldercare/v1/wristband/wb-77/telemetry:" in out and "spo2" in out
    assert "wb-78" not in out
    assert "checked 2: 1 ok, 1 rejected" in out
