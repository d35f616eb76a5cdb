"""The alert worker process: woken by the database, restarted when it dies, gone with its gateway."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from gateway.alerting.worker import AlertWorker
from gateway.domain.registry import load_registry
from gateway.domain.registry_db import import_registry
from gateway.storage.schema import upgrade
from simulators.providers.twilio.server import FakeTwilio, running_in_thread
from simulators.services.process import free_port
from tests.support import GatewayRunner, Publisher, query, wait_until, worker_children, zombie

SID, TOKEN = "AC" + "7" * 32, "worker-test-token"
SON = "+8613800000077"
REGISTRY: dict[str, Any] = {
    "elders": [
        {
            "id": "e1",
            "name": "李桂兰",
            "community": "幸福社区",
            "grid": "g1",
            "contacts": [{"name": "李明", "phone": SON, "channels": ["sms"]}],
            "devices": [{"id": "pg-1", "type": "pager"}],
        }
    ],
    "responders": [{"id": "hotline", "name": "热线", "role": "hotline", "phone": "+8640000000077"}],
}


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    twilio = FakeTwilio(SID, TOKEN)
    with running_in_thread(twilio) as running:
        yield running


def overrides(fake: FakeTwilio, tmp_path: Path) -> dict[str, Any]:
    registry = tmp_path / "registry.yaml"
    registry.write_text(yaml.safe_dump(REGISTRY, allow_unicode=True))
    port = free_port()
    return {
        "registry": {"file": str(registry)},
        "notify": {
            "public_base_url": f"http://127.0.0.1:{port}",
            "http_port": port,
            "twilio": {
                "account_sid": SID,
                "auth_token": TOKEN,
                "sms_from": "+15005550006",
                "voice_from": "+15005550006",
                "base_url": fake.base_url,
            },
        },
    }


def sos(publisher: Publisher) -> None:
    publisher.publish("eldercare/v1/pager/pg-1/event", json.dumps({"ts": time.time_ns() // 1_000_000, "event": "sos"}))


def test_a_stored_detection_wakes_the_worker_through_the_database(
    gateway: GatewayRunner, database: str, fake: FakeTwilio, tmp_path: Path
) -> None:
    """With polling set to a minute, only the trigger's NOTIFY can bring the page within seconds."""
    config = gateway.config(**overrides(fake, tmp_path))
    upgrade(database)
    with psycopg.connect(database) as conn:
        assert config.registry.file is not None
        import_registry(conn, load_registry(config.registry.file))
    stop: asyncio.Event | None = None
    loop: asyncio.AbstractEventLoop | None = None
    ready = threading.Event()

    def run() -> None:
        async def main() -> None:
            nonlocal stop, loop
            stop, loop = asyncio.Event(), asyncio.get_running_loop()
            await AlertWorker(config, database, {}, poll_s=60.0).run(stop, ready.set)

        asyncio.run(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert ready.wait(20), "worker did not start"
        time.sleep(1.0)  # past the first look it takes on its own at start-up
        started = time.monotonic()
        with psycopg.connect(database) as conn:
            conn.execute(
                "INSERT INTO detections (elder_id, device_id, kind, severity, ts, evidence) "
                "VALUES ('e1', 'pg-1', 'sos', 'critical', now(), '{}')"
            )
        fake.wait_until_sync(
            lambda: [m for m in fake.messages if m.to == SON] or None, timeout_s=10, what="the family's SMS"
        )
        assert time.monotonic() - started < 10
        assert query(database, "SELECT count(*) FROM alerts WHERE kind = 'sos' AND elder_id = 'e1'") == [(1,)]
    finally:
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)
        thread.join(30)


def test_a_killed_worker_is_started_again_and_the_next_sos_pages(
    gateway: GatewayRunner, publisher: Publisher, database: str, fake: FakeTwilio, tmp_path: Path
) -> None:
    gw = gateway.start(**overrides(fake, tmp_path))
    assert gw.alert_side is not None and gw.alert_side.worker is not None
    worker = gw.alert_side.worker
    wait_until(lambda: worker.started.is_set(), what="alert worker running")
    first = worker.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: worker.restarts == 1 and worker.pid != first, what="a new worker")
    sos(publisher)
    fake.wait_until_sync(
        lambda: [m for m in fake.messages if m.to == SON] or None,
        timeout_s=20,
        what="the family's SMS after the restart",
    )
    assert worker.restarts == 1 and worker.pid is not None and Path(f"/proc/{worker.pid}").exists()


def test_the_worker_does_not_outlive_a_killed_gateway(
    gateway: GatewayRunner, publisher: Publisher, database: str, fake: FakeTwilio, tmp_path: Path
) -> None:
    proc = gateway.start_process(**overrides(fake, tmp_path))
    wait_until(lambda: "alert worker running" in gateway.log_text(), what="gateway and worker up")
    children = worker_children(proc.pid)
    assert len(children) == 1, children
    sos(publisher)  # the worker pages: it is the one doing the work
    fake.wait_until_sync(
        lambda: [m for m in fake.messages if m.to == SON] or None, timeout_s=20, what="the family's SMS"
    )
    gateway.kill()
    wait_until(
        lambda: not Path(f"/proc/{children[0]}").exists() or zombie(children[0]),
        timeout_s=10,
        what="the worker gone after its gateway was killed",
    )
    log = gateway.log_text()  # the worker's stderr is the gateway's log file
    assert "alert worker: stopped" in log, log[-2000:]  # by end-of-file or the kernel's SIGTERM
    assert "Fatal Python error" not in log and "Traceback" not in log, log[-2000:]


def test_an_early_worker_waits_for_go_before_it_touches_the_database(tmp_path: Path) -> None:
    """Started before the schema is migrated (issue 19), it must not read the database until told."""
    import subprocess
    import sys

    import msgspec

    from gateway.config import GatewayConfig

    # a database nobody listens on: any connection attempt would log that it is unreachable
    config = msgspec.convert({"database": {"dsn": f"postgresql://127.0.0.1:{free_port()}/none"}}, GatewayConfig)
    with subprocess.Popen(
        [sys.executable, "-m", "gateway.alerting.worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as worker:
        assert worker.stdin is not None and worker.stdout is not None and worker.stderr is not None
        worker.stdin.write(msgspec.json.encode(config) + b"\n")
        worker.stdin.flush()
        time.sleep(1.0)  # long enough to have imported, read its configuration and connected
        assert worker.poll() is None, "it waits for go"
        worker.stdin.close()  # the gateway went away before the schema was current
        worker.wait(timeout=15)
        out, err = worker.stdout.read(), worker.stderr.read()
    assert worker.returncode == 0, err.decode()
    assert out == b"", "it never said ready"
    assert b"unreachable" not in err and b"Traceback" not in err, err.decode()
