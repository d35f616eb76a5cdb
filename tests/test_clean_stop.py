"""A clean stop (issue 20): SIGTERM or SIGINT, to the gateway or its whole process group.

systemd's default stop and Ctrl-C in a terminal signal every process of the group at
once, so the alert worker hears the signal too. In every state (idle, under load, the
database away with readings in the spool, an SOS mid-escalation) the gateway and its
worker must exit 0 within a few seconds, having stored or spooled and acknowledged
what they held, with no fatal error, and without the gateway starting its worker
again while it stops. Real processes, real signals.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from gateway.alerting.worker_process import STOP_TIMEOUT_S
from gateway.service import DRAIN_TIMEOUT_S
from simulators.providers.twilio.server import FakeTwilio, running_in_thread
from simulators.services.mosquitto import LocalMosquitto
from simulators.services.postgres import LocalPostgres
from simulators.services.process import free_port
from tests.support import (
    REPO,
    GatewayRunner,
    Publisher,
    count,
    ingest_connected,
    query,
    wait_until,
    worker_children,
    zombie,
)

SID, TOKEN = "AC" + "9" * 32, "clean-stop-token"
SON = "+8613800000099"
BANDS = 20
STOP_WITHIN_S = 10.0  # what "a few seconds" means here; measured stops are printed
SIGNALS = [pytest.param(signal.SIGTERM, id="SIGTERM"), pytest.param(signal.SIGINT, id="SIGINT")]
TARGETS = ["gateway", "group"]


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    twilio = FakeTwilio(SID, TOKEN)
    with running_in_thread(twilio) as running:
        yield running


def overrides(fake: FakeTwilio, tmp_path: Path) -> dict[str, Any]:
    registry = {
        "elders": [
            {
                "id": "e1",
                "name": "李桂兰",
                "community": "幸福社区",
                "grid": "g1",
                "contacts": [{"name": "李明", "phone": SON, "channels": ["sms"]}],
                "devices": [{"id": "pg-1", "type": "pager"}],
            },
            *(
                {
                    "id": f"b{i}",
                    "name": f"老人{i}",
                    "community": "幸福社区",
                    "grid": "g1",
                    "contacts": [{"name": f"家属{i}", "phone": f"+86137{i:08d}", "channels": ["sms"]}],
                    "devices": [{"id": f"wb-{i}", "type": "wristband"}],
                }
                for i in range(BANDS)
            ),
        ],
        "responders": [{"id": "hotline", "name": "热线", "role": "hotline", "phone": "+8640000000099"}],
    }
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(registry, allow_unicode=True))
    port = free_port()
    return {
        "registry": {"file": str(path)},
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


T0 = time.time_ns() // 1_000_000 - 3_600_000


def readings(start: int, n: int) -> list[tuple[str, bytes]]:
    """``n`` wristband readings spread over the bands, each its own row (no two share a timestamp)."""
    return [
        (
            f"eldercare/v1/wristband/wb-{i % BANDS}/telemetry",
            json.dumps({"ts": T0 + i, "hr": 70 + i % 5, "spo2": 97}).encode(),
        )
        for i in range(start, start + n)
    ]


def start(gateway: GatewayRunner, settings: dict[str, Any]) -> tuple[subprocess.Popen[bytes], int]:
    """The gateway in a process group of its own, up with its worker; returns it and the worker's pid."""
    proc = gateway.start_process(own_group=True, **settings)
    wait_until(
        lambda: "alert worker running" in gateway.log_text() and ingest_connected(gateway.log_text()),
        30,
        "gateway and worker up",
    )
    workers = worker_children(proc.pid)
    assert len(workers) == 1, workers
    return proc, workers[0]


def stop_cleanly(
    gateway: GatewayRunner, proc: subprocess.Popen[bytes], worker: int, sig: signal.Signals, target: str
) -> dict[str, int]:
    """Signal, then check the stop was clean; returns the gateway's last ingest counts."""
    started = time.monotonic()
    if target == "group":
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    try:
        code = proc.wait(STOP_WITHIN_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"still running {STOP_WITHIN_S} s after {sig.name}:\n{gateway.log_text()[-3000:]}"
        ) from None
    took = time.monotonic() - started
    gateway.process = None
    log = gateway.log_text()
    found = re.findall(r"ingest stopped: (\S+) (\S+) (\S+) (\S+) (\S+)", log)
    held = " ".join(found[0]) if found else "no counts"
    print(f"{sig.name} to the {target}: gateway exited {code} after {took:.2f} s; {held}")
    assert code == 0, log[-3000:]
    assert zombie(worker), "the worker outlived its gateway"
    assert "Fatal Python error" not in log and "Traceback" not in log, log[-3000:]
    assert f"alert worker (pid {worker}) stopped with code 0" in log, log[-3000:]
    assert log.count("alert worker running") == 1 and "starting it again" not in log, log[-3000:]
    assert "alert worker: stopped" in log, log[-3000:]  # the worker's own last line: it ran to its end
    assert len(found) == 1, log[-3000:]
    counts = {k: int(v) for k, v in (pair.split("=") for pair in found[0])}
    # everything the gateway took from the broker was stored or spooled, and acknowledged
    assert counts["acknowledged"] == counts["received"] and counts["ack_dropped"] == 0, counts
    return counts


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("sig", SIGNALS)
def test_idle(gateway: GatewayRunner, fake: FakeTwilio, tmp_path: Path, sig: signal.Signals, target: str) -> None:
    proc, worker = start(gateway, overrides(fake, tmp_path))
    stop_cleanly(gateway, proc, worker, sig, target)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("sig", SIGNALS)
def test_under_load_everything_held_is_stored_and_acknowledged(
    gateway: GatewayRunner,
    broker: LocalMosquitto,
    database: str,
    fake: FakeTwilio,
    tmp_path: Path,
    sig: signal.Signals,
    target: str,
) -> None:
    settings = overrides(fake, tmp_path)
    settings["ingest"] = {"device_rate_per_s": 1e6, "device_burst": 1e7}  # load, not a flood to limit
    proc, worker = start(gateway, settings)
    publisher = Publisher(broker.port)
    sent = itertools.count()
    published = 0
    halt = threading.Event()

    def feed() -> None:  # 20 bands, 200 readings a burst, as fast as the broker takes them
        nonlocal published
        while not halt.is_set():
            n = next(sent) * 200
            publisher.publish_many(readings(n, 200))
            published = n + 200

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        wait_until(lambda: count(database, "telemetry_wristband") > 5000, 60, "telemetry flowing")
        counts = stop_cleanly(gateway, proc, worker, sig, target)
    finally:
        halt.set()
        feeder.join(30)
        publisher.close()
    stored = count(database, "telemetry_wristband")
    assert counts["received"] > 5000 and stored >= counts["stored_rows"] > 5000, (counts, stored)
    # what the broker still held for the gateway's session arrives after a restart: nothing lost
    gateway.start_process(**settings)
    wait_until(lambda: count(database, "telemetry_wristband") == published, 60, f"all {published} readings stored")


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("sig", SIGNALS)
def test_mid_escalation(
    gateway: GatewayRunner,
    publisher: Publisher,
    database: str,
    fake: FakeTwilio,
    tmp_path: Path,
    sig: signal.Signals,
    target: str,
) -> None:
    """An SOS opened and its first tier paged: the stop leaves no page half-sent."""
    proc, worker = start(gateway, overrides(fake, tmp_path))
    publisher.publish("eldercare/v1/pager/pg-1/event", json.dumps({"ts": time.time_ns() // 1_000_000, "event": "sos"}))
    fake.wait_until_sync(lambda: [m for m in fake.messages if m.to == SON] or None, timeout_s=20, what="tier 1 paged")
    stop_cleanly(gateway, proc, worker, sig, target)
    assert query(database, "SELECT state FROM alerts WHERE kind = 'sos'") not in ([], [("resolved",)])
    assert query(database, "SELECT count(*) FROM tier_firings") != [(0,)]
    # every page is sent or waiting its turn; none was left claimed mid-send
    assert query(database, "SELECT count(*) FROM notifications WHERE status = 'sending'") == [(0,)]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("sig", SIGNALS)
def test_mid_escalation_with_a_page_in_flight(
    gateway: GatewayRunner,
    publisher: Publisher,
    database: str,
    fake: FakeTwilio,
    tmp_path: Path,
    sig: signal.Signals,
    target: str,
) -> None:
    """The outbox is mid-send (a retry the provider holds open) at the signal: the worker waits for its answer."""
    settings = overrides(fake, tmp_path)
    settings["notify"]["twilio"]["timeout_s"] = 2  # the held requests fail after 2 s
    settings["notify"]["backoff_initial_s"] = 0.5
    fake.fail_next(2, "timeout", api="messages")  # the immediate send and the outbox's first retry
    proc, worker = start(gateway, settings)
    publisher.publish("eldercare/v1/pager/pg-1/event", json.dumps({"ts": time.time_ns() // 1_000_000, "event": "sos"}))
    fake.wait_until_sync(
        lambda: len([m for m in fake.messages if m.to == SON and m.outcome == "timeout"]) == 2 or None,
        timeout_s=30,
        what="the retry held open by the provider",
    )
    stop_cleanly(gateway, proc, worker, sig, target)
    # the retry's failure was recorded (it is due again), not left claimed until its lease runs out
    assert query(database, "SELECT status, attempts FROM notifications WHERE phone = %s", (SON,)) == [("pending", 2)]


# -- the database away, readings in the spool --------------------------------------------------


@pytest.fixture(scope="module")
def own_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    """A server of this module's own: the tests stop it (the shared one must stay up)."""
    server = LocalPostgres(tmp_path_factory.mktemp("clean-stop-pg"), fsync=False)
    server.start()
    try:
        yield server
    finally:
        server.stop("immediate")


_databases = itertools.count()


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("sig", SIGNALS)
def test_database_away_with_a_spool(
    broker: LocalMosquitto,
    own_postgres: LocalPostgres,
    fake: FakeTwilio,
    tmp_path: Path,
    sig: signal.Signals,
    target: str,
) -> None:
    """The spool stays on disk through the stop and is stored once the database is back."""
    if not (own_postgres.datadir / "postmaster.pid").exists():
        own_postgres.start()  # an earlier test failed before starting it again
    name = f"away{next(_databases)}"
    with psycopg.connect(own_postgres.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    dsn = own_postgres.dsn.rsplit("/", 1)[0] + f"/{name}"
    gateway = GatewayRunner(broker_port=broker.port, dsn=dsn, workdir=tmp_path / "gateway")
    settings = overrides(fake, tmp_path)
    spool = tmp_path / "gateway" / "spool"
    try:
        proc, worker = start(gateway, settings)
        own_postgres.stop("immediate")
        publisher = Publisher(broker.port)
        try:
            publisher.publish_many(readings(0, 500))
        finally:
            publisher.close()
        wait_until(lambda: "spooling to" in gateway.log_text() and _spooled(spool) > 0, 20, "the gateway spooling")
        time.sleep(1.0)  # the rest of the 500 reach the spool too
        counts = stop_cleanly(gateway, proc, worker, sig, target)
        assert counts["spooled"] == counts["received"] > 0 and _spooled(spool) > 0, (counts, _spooled(spool))
        own_postgres.start()
        gateway.start_process(**settings)
        wait_until(lambda: count(dsn, "telemetry_wristband") == 500, 60, "the spooled readings stored")
        wait_until(lambda: _spooled(spool) == 0, 20, "the spool emptied")
    finally:
        gateway.stop()
        if not (own_postgres.datadir / "postmaster.pid").exists():
            own_postgres.start()


def _spooled(spool: Path) -> int:
    return sum(1 for p in spool.rglob("*") if p.is_file()) if spool.exists() else 0


def test_the_systemd_unit_stops_as_these_tests_do() -> None:
    """SIGTERM to the gateway alone (the "gateway" cases above), and time for the gateway's own bounds."""
    unit = dict(
        line.split("=", 1)
        for line in (REPO / "deploy" / "eldercare-gateway.service").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert unit["KillMode"] == "mixed" and unit["KillSignal"] == "SIGTERM"
    assert int(unit["TimeoutStopSec"]) >= DRAIN_TIMEOUT_S + STOP_TIMEOUT_S
