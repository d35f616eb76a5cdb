"""Fleet mode: a short run through the real broker and gateway, per-device logins, the CLI."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.provision import BrokerCredentials
from simulators.fleet import (
    FleetConfig,
    FleetError,
    FleetProgress,
    device_type_of,
    fleet_devices,
    load_credentials,
    parse_broker,
    parse_mix,
    run_fleet,
)
from simulators.services.mosquitto import LocalMosquitto
from tests.support import REPO, GatewayRunner, count, wait_until

pytestmark = pytest.mark.slow

TABLES = {
    "wristband/telemetry": "telemetry_wristband",
    "glucose/telemetry": "telemetry_glucose",
    "bp/telemetry": "telemetry_bp",
}


def test_options() -> None:
    assert parse_mix("wristband=7,pager=1,glucose=1,bp=1") == pytest.approx(
        {"wristband": 0.7, "pager": 0.1, "glucose": 0.1, "bp": 0.1}
    )
    with pytest.raises(FleetError, match="unknown device type 'watch'"):
        parse_mix("watch=1")
    with pytest.raises(FleetError, match="above zero"):
        parse_mix("pager=0")
    assert parse_broker("mq.example:8883") == ("mq.example", 8883)
    assert parse_broker("localhost") == ("localhost", 1883)
    devices = fleet_devices(FleetConfig(devices=1000, mix={"wristband": 0.7, "pager": 0.1, "glucose": 0.1, "bp": 0.1}))
    kinds = [t for _, t in devices]
    assert len(devices) == 1000 and kinds.count("wristband") == 700 and kinds.count("bp") == 100
    assert devices == fleet_devices(FleetConfig(devices=1000))  # same config, same fleet
    assert all(device_type_of(d) == t for d, t in devices)
    with pytest.raises(FleetError, match="cannot tell the type"):
        device_type_of("sensor-17")


def test_credentials_file_formats(tmp_path: Path) -> None:
    path = tmp_path / "creds.txt"
    path.write_text("# from eldercare provision add\nwb-1: password abc_DEF-123\npg-2 s3cret\ngl-3:pw\nbp-4,pw2\n")
    assert load_credentials(path) == {"wb-1": "abc_DEF-123", "pg-2": "s3cret", "gl-3": "pw", "bp-4": "pw2"}
    path.write_text("wb-1\n")
    with pytest.raises(FleetError, match=r"creds\.txt:1"):
        load_credentials(path)


def test_short_run_every_acknowledged_message_is_stored(
    gateway: GatewayRunner, broker: LocalMosquitto, database: str
) -> None:
    gateway.start()
    seen: list[FleetProgress] = []
    result = run_fleet(
        FleetConfig(devices=200, rate=1000, duration_s=2.0, port=broker.port, connections=2),
        progress=seen.append,
        progress_interval_s=0.5,
    )
    assert result.errors == 0 and result.refused == 0 and not result.interrupted
    assert result.sent == result.acked and 1800 <= result.acked <= 2100
    assert result.connections == 2 and result.devices == 200
    assert 800 <= result.mean_rate <= 1100
    assert sum(result.by_topic.values()) == result.acked
    assert seen and seen[-1].acked == result.acked and any(p.phase == "sending" for p in seen)
    expected = {table: result.by_topic.get(topic, 0) for topic, table in TABLES.items()}
    expected["device_status"] = sum(v for k, v in result.by_topic.items() if k.endswith("/status"))
    assert all(expected.values()), expected  # every type and channel of the mix took part
    for table, n in expected.items():
        wait_until(lambda t=table, n=n: count(database, t) == n, 30, f"{n} rows in {table}")  # type: ignore[misc]
    assert count(database, "dead_letters") == 0
    assert count(database, "device_events") == 0  # a load test pages nobody


def test_per_device_credentials_one_connection_each(tmp_path: Path) -> None:
    creds = BrokerCredentials(tmp_path / "passwd", tmp_path / "acl")
    lines = [
        f"sim-{kind}-{i:06d}: password {creds.add_device(f'sim-{kind}-{i:06d}', device_type_of(f'sim-{kind}-{i:06d}'))}"
        for i, kind in enumerate(["wb"] * 8 + ["pg", "gl", "bp"])
    ]
    lines.append("sim-wb-000099: password wrong")  # provisioned nowhere
    (tmp_path / "creds.txt").write_text("\n".join(lines) + "\n")
    broker = LocalMosquitto(
        tmp_path / "mosquitto",
        anonymous=False,
        extra_config=[f"password_file {creds.passwd_file}", f"acl_file {creds.acl_file}"],
    ).start()
    try:
        result = run_fleet(
            FleetConfig(
                devices=0,
                rate=300,
                duration_s=1.5,
                port=broker.port,
                credentials=load_credentials(tmp_path / "creds.txt"),
            )
        )
    finally:
        broker.stop()
    assert result.devices == 12 and result.connections == 12
    assert result.refused == 1 and result.errors == 1
    assert any("sim-wb-000099" in e and "refused" in e for e in result.error_samples)
    assert result.sent == result.acked and result.acked > 300
    assert {"wristband/telemetry", "pager/status", "glucose/telemetry", "bp/telemetry"} <= set(result.by_topic)


def test_two_processes(broker: LocalMosquitto) -> None:
    result = run_fleet(FleetConfig(devices=300, rate=2000, duration_s=1.5, port=broker.port, processes=2))
    assert result.processes == 2 and result.devices == 300 and result.errors == 0
    assert result.sent == result.acked and 2500 <= result.acked <= 3300


def simulate(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "simulators.cli", "simulate", *args],
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_cli_progress_summary_and_ctrl_c(broker: LocalMosquitto) -> None:
    done = simulate(
        "--devices",
        "100",
        "--rate",
        "400",
        "--duration",
        "1.5",
        "--broker",
        f"127.0.0.1:{broker.port}",
        "--mix",
        "wristband=0.5,pager=0.5",
    )
    out, err = done.communicate(timeout=60)
    assert done.returncode == 0, err
    assert "fleet summary: 100 devices" in out and "errors 0" in out
    assert "pager/status" in out and "glucose" not in out
    progress = [line for line in err.splitlines() if "msg/s" in line]
    assert progress and all("\r" not in line for line in progress)  # not a terminal: plain lines
    assert "sending" in err

    running = simulate("--devices", "100", "--rate", "400", "--duration", "60", "--broker", f"127.0.0.1:{broker.port}")
    time.sleep(2.5)
    running.send_signal(signal.SIGINT)
    out, err = running.communicate(timeout=30)
    assert running.returncode == 130, err
    assert "fleet summary (interrupted)" in out and "errors 0" in out
    assert "Traceback" not in err

    bad = simulate("--mix", "wristband=1,watch=1")
    out, err = bad.communicate(timeout=30)
    assert bad.returncode == 2 and "unknown device type 'watch'" in err
