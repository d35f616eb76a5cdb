"""Test helpers: a gateway run in a thread or a subprocess, a QoS 1 publisher, polling."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
import psycopg
import yaml

from gateway.config import GatewayConfig, load_config
from gateway.service import Gateway

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent


# the gateway's own ingest session; the alert worker (started first, issue 19) connects as "<id>-alerts"
_INGEST_CONNECTED = re.compile(r"MQTT connected to \S+ as \S+(?<!-alerts)$", re.MULTILINE)


def ingest_connected(log_text: str) -> bool:
    """The gateway's ingest session is up (its subscriptions are made), not only its worker's."""
    return _INGEST_CONNECTED.search(log_text) is not None


def wait_until(check: Callable[[], T], timeout_s: float = 20.0, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what} (last: {last!r})")


def query(dsn: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


def count(dsn: str, table: str) -> int:
    return int(query(dsn, f"SELECT count(*) FROM {table}")[0][0])


class Publisher:
    """A paho-mqtt client publishing at QoS 1 and waiting for the broker's PUBACKs."""

    def __init__(self, port: int, client_id: str | None = None) -> None:
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"pub-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos=qos)
        info.wait_for_publish(10)

    def publish_many(self, messages: list[tuple[str, bytes]], qos: int = 1) -> None:
        infos = [self.client.publish(t, p, qos=qos) for t, p in messages]
        for info in infos:
            info.wait_for_publish(60)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class GatewayRunner:
    """Runs the gateway against the test's broker and database.

    ``start()`` runs it in a thread of this process (fast, shares the clock);
    ``start_process()`` runs ``eldercare run`` as a child, so it can be SIGKILLed.
    """

    def __init__(self, broker_port: int, dsn: str, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.settings: dict[str, Any] = {
            "mqtt": {"port": broker_port, "client_id": f"gw-{uuid.uuid4().hex[:8]}", "keepalive_s": 10},
            "database": {"dsn": dsn, "connect_timeout_s": 2},
            "storage": {"spool_dir": str(workdir / "spool"), "db_retry_s": 0.2},
            "notify": {"http_port": 0},
            "api": {"cookie_secure": False},  # plain http on loopback
            "logging": {"level": "INFO", "stats_interval_s": 5},
        }
        self.gateway: Gateway | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def config(self, **overrides: dict[str, Any]) -> GatewayConfig:
        for section, values in overrides.items():
            self.settings.setdefault(section, {}).update(values)
        path = self.workdir / "config.yaml"
        path.write_text(yaml.safe_dump(self.settings))
        return load_config(path, environ={})

    def start(self, **overrides: dict[str, Any]) -> Gateway:
        config = self.config(**overrides)
        ready = threading.Event()

        def run() -> None:
            async def main() -> None:
                self._loop = asyncio.get_running_loop()
                self._stop = asyncio.Event()
                self.gateway = Gateway(config)
                task = asyncio.create_task(self.gateway.run(self._stop))
                started = asyncio.create_task(self.gateway.ready.wait())
                await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
                started.cancel()
                ready.set()
                await task

            try:
                asyncio.run(main())
            except BaseException as error:  # surfaced by stop()
                self._error = error
                ready.set()

        self._thread = threading.Thread(target=run, name="gateway", daemon=True)
        self._thread.start()
        assert ready.wait(30), "gateway did not start"
        if self._error:
            raise self._error
        assert self.gateway is not None
        gw = self.gateway
        wait_until(lambda: gw.mqtt.connected.is_set(), 10, "gateway MQTT connection")
        return gw

    def stop(self) -> None:
        if self._thread is not None:
            if self._loop is not None and self._stop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(30)
            self._thread = None
            if self._error:
                error, self._error = self._error, None
                raise error
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(30)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            self.process = None

    def start_process(self, *, own_group: bool = False, **overrides: dict[str, Any]) -> subprocess.Popen[bytes]:
        """``own_group``: in a process group of its own (with its worker), as under systemd or a shell."""
        self.config(**overrides)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ELDERCARE_")}
        with (self.workdir / "gateway.log").open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "-c", str(self.workdir / "config.yaml"), "run"],
                stdout=log,
                stderr=log,
                cwd=REPO,
                env=env,
                start_new_session=own_group,
            )
        return self.process

    def kill(self) -> None:
        """SIGKILL the child gateway: no flush, no goodbye."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.process = None

    def log_text(self) -> str:
        path = self.workdir / "gateway.log"
        return path.read_text(errors="replace") if path.exists() else ""


def worker_children(pid: int) -> list[int]:
    """The alert worker processes whose parent is ``pid``."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            with contextlib.suppress(FileNotFoundError):
                if b"gateway.alerting.worker" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.append(int(child))
    return found


def zombie(pid: int) -> bool:
    """Exited (or never was): its /proc entry is gone or says Z."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (FileNotFoundError, IndexError):
        return True


class CommandListener:
    """Plays the band's firmware side of the downlink: records what arrives on its cmd topic."""

    def __init__(self, port: int, device: str = "wb-1") -> None:
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"band-{device}", protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"eldercare/v1/wristband/{device}/cmd", qos=1)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self.lock:
            self.received.append(json.loads(message.payload))

    def commands(self) -> list[str]:
        with self.lock:
            return [m["cmd"] for m in self.received]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
