"""Per-device credentials against a real broker: own topics only; unknown or revoked devices out."""

from __future__ import annotations

import json
import os
import pwd
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from gateway.provision import BrokerCredentials, ProvisionError
from simulators.services.mosquitto import LocalMosquitto
from tests.support import REPO, GatewayRunner, count, wait_until


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
    passwords = {d: creds.add_device(d, "wristband") for d in ("wb-1", "wb-2")}
    passwords["pg-1"] = creds.add_device("pg-1", "pager")
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
    creds.add_device("pg-7", "pager")
    with pytest.raises(ProvisionError, match="already has credentials"):
        creds.add_device("pg-7", "pager")
    with pytest.raises(ProvisionError, match="is not 1-64"):
        creds.add_device("bad id/#", "pager")
    with pytest.raises(ProvisionError, match="unknown device type 'watch'"):
        creds.add_device("wt-1", "watch")
    with pytest.raises(ProvisionError, match="no credentials to revoke"):
        creds.revoke("pg-8")
    acl = (tmp_path / "a").read_text()
    assert "user pg-7\ntopic write eldercare/v1/pager/pg-7/event\n" in acl and "pattern" not in acl
    assert "pager/pg-7/telemetry" not in acl  # a pager has no telemetry channel
    assert oct((tmp_path / "p").stat().st_mode & 0o777) == "0o600"


def test_provisioned_files_are_the_broker_users_own(tmp_path: Path) -> None:
    """Mosquitto 2.0 opens them after dropping to its user: root-only files stop it ("Unable to open pwfile")."""
    creds = BrokerCredentials(tmp_path / "eldercare.passwd", tmp_path / "eldercare.acl")
    creds.add_gateway()
    creds.add_device("wb-1", "wristband")
    creds.rotate("wb-1")
    creds.revoke("wb-1")  # mosquitto_passwd rewrites the file each time
    broker_uid = pwd.getpwnam("mosquitto").pw_uid if os.geteuid() == 0 else os.geteuid()
    for path in (creds.passwd_file, creds.acl_file):
        st = path.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (broker_uid, 0o600), path
    assert creds.warnings == []
    lost = BrokerCredentials(tmp_path / "p2", tmp_path / "a2", broker_user="no-such-broker-user")
    lost.add_device("wb-2", "wristband")
    assert lost.warnings and "no-such-broker-user" in lost.warnings[0]


def test_a_device_publishes_only_as_its_registered_type(secured: Any) -> None:
    """A pattern rule (``+/%u/#``) let wristband wb-1 send an SOS as a pager or a glucose reading as a meter."""
    broker, creds, gw_password, passwords = secured
    gateway, reason = connect(broker.port, creds.gateway_user, gw_password)
    assert not reason.is_failure
    received: list[str] = []
    gateway.on_message = lambda c, u, m: received.append(m.topic)
    gateway.subscribe("eldercare/v1/#", qos=1)
    band, reason = connect(broker.port, "wb-1", passwords["wb-1"])
    pager, _ = connect(broker.port, "pg-1", passwords["pg-1"])
    assert not reason.is_failure
    time.sleep(0.3)
    forged = [
        ("eldercare/v1/pager/wb-1/event", b'{"ts": 1, "event": "sos"}'),
        ("eldercare/v1/glucose/wb-1/telemetry", b'{"ts": 1, "glucose": 2.1}'),
        ("eldercare/v1/bp/wb-1/status", b'{"ts": 1, "online": true}'),
    ]
    for topic, payload in forged:
        band.publish(topic, payload, qos=1).wait_for_publish(5)
    pager.publish("eldercare/v1/wristband/pg-1/event", b'{"ts": 1, "event": "sos"}', qos=1).wait_for_publish(5)
    band.publish("eldercare/v1/wristband/wb-1/event", b'{"ts": 1, "event": "sos"}', qos=1).wait_for_publish(5)
    pager.publish("eldercare/v1/pager/pg-1/event", b'{"ts": 1, "event": "sos"}', qos=1).wait_for_publish(5)
    time.sleep(1.0)
    assert sorted(received) == ["eldercare/v1/pager/pg-1/event", "eldercare/v1/wristband/wb-1/event"]
    for client in (gateway, band, pager):
        client.loop_stop()
        client.disconnect()


def test_accounts_from_an_older_version_are_typed_without_a_new_password(tmp_path: Path) -> None:
    creds = BrokerCredentials(tmp_path / "p", tmp_path / "a")
    creds.add_device("wb-1", "wristband")
    password = creds.add_device("wb-9", "wristband")
    legacy = (tmp_path / "a").read_text().replace("user wb-9\n", "user wb-9-old\n")  # wb-9's block lost its type
    (tmp_path / "a").write_text(legacy)
    assert creds.untyped() == ["wb-9"]
    creds.rotate("wb-1")
    assert any("wb-9" in w and "provision type" in w for w in creds.warnings)
    creds.set_type("wb-9", "wristband")
    assert creds.untyped() == [] and creds.device_types() == {"wb-1": "wristband", "wb-9": "wristband"}
    assert "wb-9" in creds.users() and password  # the device keeps its password
    with pytest.raises(ProvisionError, match="no credentials"):
        creds.set_type("wb-5", "pager")


def test_through_the_gateway_a_forged_type_leaves_no_alert_and_no_row(
    secured: Any, database: str, tmp_path: Path
) -> None:
    """The provisioned ACL in front of the gateway: wb-1's SOS as a pager and 2.1 mmol/L as a meter never arrive."""
    broker, creds, gw_password, passwords = secured
    registry = tmp_path / "registry.yaml"
    elder = {
        "id": "e1",
        "name": "王秀英",
        "devices": [{"id": "wb-1", "type": "wristband"}, {"id": "pg-1", "type": "pager"}],
        "contacts": [{"name": "王强", "phone": "+8613800000001"}],
    }
    hotline = {"id": "hotline", "name": "热线", "role": "hotline", "phone": "+8640000000001"}
    registry.write_text(yaml.safe_dump({"elders": [elder], "responders": [hotline]}, allow_unicode=True))
    runner = GatewayRunner(broker_port=broker.port, dsn=database, workdir=tmp_path / "gateway")
    band, reason = connect(broker.port, "wb-1", passwords["wb-1"])
    assert not reason.is_failure
    try:
        runner.start(mqtt={"username": creds.gateway_user, "password": gw_password}, registry={"file": str(registry)})
        now = time.time_ns() // 1_000_000

        def send(topic: str, payload: dict[str, Any]) -> None:
            band.publish(topic, json.dumps({"ts": now, **payload}), qos=1).wait_for_publish(5)

        send("eldercare/v1/wristband/wb-1/telemetry", {"hr": 70})
        wait_until(lambda: count(database, "telemetry_wristband") == 1, what="the band's first reading")
        send("eldercare/v1/pager/wb-1/event", {"event": "sos"})
        send("eldercare/v1/glucose/wb-1/telemetry", {"glucose": 2.1})
        send("eldercare/v1/wristband/wb-1/telemetry", {"ts": now + 1000, "hr": 71})  # after the forged ones
        wait_until(lambda: count(database, "telemetry_wristband") == 2, what="the band's second reading")
        time.sleep(0.5)
        assert count(database, "alerts") == 0 and count(database, "telemetry_glucose") == 0
        assert count(database, "device_events") == 0 and count(database, "dead_letters") == 0  # refused at the broker
    finally:
        runner.stop()
        band.loop_stop()
        band.disconnect()


def test_the_provision_command_types_every_account_it_adds(tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        files = ["--passwd-file", str(tmp_path / "p"), "--acl-file", str(tmp_path / "a")]
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", "provision", *files, *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )

    added = cli("add", "--type", "glucose", "gl-1", "gl-2")
    assert added.returncode == 0, added.stderr
    assert [line.split(":")[0] for line in added.stdout.splitlines()] == ["gl-1", "gl-2"]
    assert cli("add", "gl-3").returncode == 2  # no type: refused by the parser
    assert cli("add", "--type", "pager", "gl-2", "pg-9").returncode == 1  # gl-2 exists: nothing added
    assert "pg-9" not in cli("list").stdout
    assert cli("type", "pager", "gl-2").returncode == 0
    assert BrokerCredentials(tmp_path / "p", tmp_path / "a").device_types() == {"gl-1": "glucose", "gl-2": "pager"}
