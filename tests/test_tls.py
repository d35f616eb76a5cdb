"""The broker's TLS listener with a self-signed CA: devices and the gateway connect verified."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.provision import hand_to_broker
from simulators.services.mosquitto import LocalMosquitto
from simulators.services.process import free_port
from tests.support import GatewayRunner, count, wait_until


def make_ca_and_server_cert(d: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1, as an operator would make them."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=eldercare test CA",
        "-days",
        "2",
    )
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.cnf",
    )
    return d / "ca.crt", d / "server.crt", d / "server.key"


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[LocalMosquitto, int, Path]]:
    certs = tmp_path / "certs"
    certs.mkdir()
    ca, cert, key = make_ca_and_server_cert(certs)
    assert hand_to_broker(key) is None  # the broker runs as mosquitto: its key must be its own
    tls_port = free_port()
    broker = LocalMosquitto(
        tmp_path / "mosquitto",
        extra_config=[
            f"listener {tls_port} 127.0.0.1",
            f"cafile {ca}",
            f"certfile {cert}",
            f"keyfile {key}",
            "tls_version tlsv1.2",
        ],
    )
    broker.start()
    yield broker, tls_port, ca
    broker.stop()


def test_gateway_and_device_over_tls_with_a_self_signed_ca(
    tls_broker: tuple[LocalMosquitto, int, Path], database: str, tmp_path: Path
) -> None:
    _, tls_port, ca = tls_broker
    gateway = GatewayRunner(broker_port=tls_port, dsn=database, workdir=tmp_path / "gw")
    try:
        gateway.start(mqtt={"port": tls_port, "tls_ca_file": str(ca)})
        device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="wb-tls", protocol=mqtt.MQTTv5)
        device.tls_set(ca_certs=str(ca), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        device.connect("127.0.0.1", tls_port)
        device.loop_start()
        device.publish(
            "eldercare/v1/wristband/wb-tls/telemetry", json.dumps({"ts": time.time_ns() // 1_000_000, "hr": 66}), qos=1
        ).wait_for_publish(10)
        wait_until(lambda: count(database, "telemetry_wristband") == 1, what="the reading sent over TLS")
        device.loop_stop()
        device.disconnect()
        # a client that trusts only the system CAs refuses this broker: verification is on
        with (
            socket.create_connection(("127.0.0.1", tls_port), timeout=5) as raw,
            pytest.raises(ssl.SSLCertVerificationError),
        ):
            ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")
    finally:
        gateway.stop()
