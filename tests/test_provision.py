"""Per-device credentials against a real broker: own topics only; unknown or revoked devices out."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.provision import BrokerCredentials, ProvisionError
from simulators.services.local import LocalMosquitto


def connect(port: int, user: str, password: str) -> tuple[mqtt.Client, Any]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=user, protocol=mqtt.MQTTv5)
    client.username_pw_set(user, password)
    result: dict[str, Any] = {}
    done = threading.Event()

    def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        result["reason"] = reason
        done.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port)
    client.loop_start()
    assert done.wait(10)
    return client, result["reason"]


@pytest.fixture
def secured(tmp_path: Path) -> Any:
    creds = BrokerCredentials(tmp_path / "eldercare.passwd", tmp_path / "eldercare.acl")
    gw_password = creds.add_gateway()
    passwords = {d: creds.add_device(d) for d in ("wb-1", "wb-2")}
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


def test_a_device_publishes_only_as_itself_and_reads_only_its_commands(secured: Any) -> None:
    broker, creds, gw_password, passwords = secured
    gateway, reason = connect(broker.port, creds.gateway_user, gw_password)
    assert not reason.is_failure
    received: list[str] = []
    gateway.on_message = lambda c, u, m: received.append(m.topic)
    gateway.subscribe("eldercare/v1/+/+/telemetry", qos=1)
    band, reason = connect(broker.port, "wb-1", passwords["wb-1"])
    assert not reason.is_failure
    commands: list[str] = []
    band.on_message = lambda c, u, m: commands.append(m.topic)
    band.subscribe("eldercare/v1/wristband/+/cmd", qos=1)  # asks for every band's commands
    time.sleep(0.3)
    band.publish("eldercare/v1/wristband/wb-2/telemetry", b'{"ts": 1, "hr": 70}', qos=1).wait_for_publish(5)
    band.publish("eldercare/v1/wristband/wb-1/telemetry", b'{"ts": 1, "hr": 70}', qos=1).wait_for_publish(5)
    gateway.publish("eldercare/v1/wristband/wb-2/cmd", b'{"cmd": "help_coming"}', qos=1).wait_for_publish(5)
    gateway.publish("eldercare/v1/wristband/wb-1/cmd", b'{"cmd": "help_coming"}', qos=1).wait_for_publish(5)
    time.sleep(1.0)
    assert received == ["eldercare/v1/wristband/wb-1/telemetry"]  # not the one forged as wb-2
    assert commands == ["eldercare/v1/wristband/wb-1/cmd"]  # not wb-2's commands
    for client in (gateway, band):
        client.loop_stop()
        client.disconnect()


def test_unknown_wrong_password_and_revoked_devices_cannot_connect(secured: Any) -> None:
    broker, creds, _, passwords = secured
    for user, password in (("wb-9", "guess"), ("wb-1", "wrong-password")):
        client, reason = connect(broker.port, user, password)
        assert reason.is_failure, user
        client.loop_stop()
    new = creds.rotate("wb-2")
    creds.revoke("wb-1")
    assert broker.process is not None
    broker.process.send_signal(1)  # SIGHUP: the broker reloads its password and ACL files
    time.sleep(0.5)
    client, reason = connect(broker.port, "wb-1", passwords["wb-1"])
    assert reason.is_failure
    client.loop_stop()
    client, reason = connect(broker.port, "wb-2", passwords["wb-2"])
    assert reason.is_failure  # the old password no longer works
    client.loop_stop()
    client, reason = connect(broker.port, "wb-2", new)
    assert not reason.is_failure
    client.loop_stop()
    client.disconnect()


def test_provision_refuses_bad_ids_and_duplicates(tmp_path: Path) -> None:
    creds = BrokerCredentials(tmp_path / "p", tmp_path / "a")
    creds.add_device("pg-7")
    with pytest.raises(ProvisionError, match="already has credentials"):
        creds.add_device("pg-7")
    with pytest.raises(ProvisionError, match="is not 1-64"):
        creds.add_device("bad id/#")
    with pytest.raises(ProvisionError, match="no credentials to revoke"):
        creds.revoke("pg-8")
    assert "pattern write eldercare/v1/+/%u/telemetry" in (tmp_path / "a").read_text()
    assert oct((tmp_path / "p").stat().st_mode & 0o777) == "0o600"
