"""One device floods the broker at 10,000 messages/s: it is limited and reported; the others' SOS still page."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.pipeline.rate_limit import DeviceRateLimiter, RateLimits
from simulators.providers.twilio.server import FakeTwilio, running_in_thread
from simulators.services.mosquitto import LocalMosquitto
from simulators.services.process import free_port
from tests.support import REPO, GatewayRunner, Publisher, query, wait_until

SID, TOKEN = "AC" + "9" * 32, "flood-token"
PAGERS = 10
RATE, SECONDS = 10_000, 4.0

pytestmark = pytest.mark.slow

FLOODER = r"""
import asyncio, json, sys, time
sys.path.insert(0, sys.argv[3])
from simulators.bulk_publisher import publish_all
port, rate, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[4])
base = time.time_ns() // 1_000_000
frames = [("eldercare/v1/wristband/wb-flood/telemetry",
           json.dumps({"ts": base + i, "hr": 70, "spo2": 97}).encode()) for i in range(int(rate * seconds))]
print("ready", flush=True)
def paced():
    start = time.monotonic()
    for n, frame in enumerate(frames):
        while n > (time.monotonic() - start) * rate:
            time.sleep(0.001)
        yield frame
t = time.monotonic()
acked = asyncio.run(publish_all("127.0.0.1", port, paced(), client_id="flooder", chunk=100, window=20000))
print(acked, acked / (time.monotonic() - t), flush=True)
"""


def phone(i: int) -> str:
    return f"+86136{i:08d}"


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    twilio = FakeTwilio(SID, TOKEN)
    with running_in_thread(twilio) as running:
        yield running


def test_the_limiter_lets_a_burst_through_then_the_rate() -> None:
    limiter = DeviceRateLimiter(
        RateLimits(rate_per_s=10, burst=100, event_rate_per_s=1, event_burst=3, report_every_ms=1000)
    )
    allowed = sum(limiter.allow("wb-1", False, 0) for _ in range(1000))
    assert allowed == 100
    assert sum(limiter.allow("wb-1", False, 1000) for _ in range(100)) == 10  # 1 s later: 10 more
    # events have their own bucket: a telemetry flood leaves room for an SOS
    assert limiter.allow("wb-1", True, 1000)
    assert limiter.allow("wb-2", False, 1000)  # and other devices are untouched
    for _ in range(3):
        limiter.dropped("wb-1", "eldercare/v1/wristband/wb-1/telemetry", b"{}", 1000)
    assert limiter.due_reports(1500) == []
    [report] = limiter.due_reports(2000)
    assert (report.device_id, report.dropped) == ("wb-1", 3)
    assert "rate limited: 3 messages from device wb-1" in report.reason(limiter.limits)


def test_a_flooding_device_is_limited_and_reported_while_other_devices_sos_still_page(
    gateway: GatewayRunner, broker: LocalMosquitto, database: str, fake: FakeTwilio, tmp_path: Path
) -> None:
    registry: dict[str, Any] = {
        "elders": [
            {
                "id": f"e{i}",
                "name": f"老人{i}",
                "community": "c",
                "grid": "g",
                "contacts": [{"name": f"家属{i}", "phone": phone(i), "channels": ["sms"]}],
                "devices": [{"id": f"pg-{i}", "type": "pager"}],
            }
            for i in range(PAGERS)
        ]
        + [{"id": "e-flood", "name": "坏设备", "devices": [{"id": "wb-flood", "type": "wristband"}]}],
        "responders": [{"id": "hotline", "name": "热线", "role": "hotline", "phone": "+8640000000001"}],
    }
    (tmp_path / "registry.yaml").write_text(yaml.safe_dump(registry, allow_unicode=True))
    port = free_port()
    gw = gateway.start(
        registry={"file": str(tmp_path / "registry.yaml")},
        ingest={"device_rate_per_s": 50, "device_burst": 1000},
        notify={
            "http_port": port,
            "public_base_url": f"http://127.0.0.1:{port}",
            "twilio": {
                "account_sid": SID,
                "auth_token": TOKEN,
                "sms_from": "+15005550006",
                "voice_from": "+15005550006",
                "base_url": fake.base_url,
            },
        },
    )
    flooder = subprocess.Popen(
        [sys.executable, "-c", FLOODER, str(broker.port), str(RATE), str(REPO), str(SECONDS)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert flooder.stdout is not None
    assert flooder.stdout.readline().strip() == "ready"
    pub = Publisher(broker.port)
    latencies: list[float] = []
    try:
        time.sleep(1.0)  # the flood is well under way
        for i in range(PAGERS):
            pressed = time.time()
            pub.publish(
                f"eldercare/v1/pager/pg-{i}/event", json.dumps({"ts": time.time_ns() // 1_000_000, "event": "sos"})
            )
            paged = fake.wait_until_sync(
                lambda i=i: next((m.received_at_ms for m in fake.messages if m.to == phone(i)), None),
                timeout_s=10,
                what=f"the page for SOS {i} during the flood",
            )
            latencies.append(paged - pressed * 1000)
            time.sleep(0.15)
        out, _ = flooder.communicate(timeout=60)
    finally:
        pub.close()
        if flooder.poll() is None:
            flooder.kill()
    acked, achieved = (float(x) for x in out.split())
    assert acked == RATE * SECONDS and achieved > 0.7 * RATE, f"the flood ran at {achieved:.0f} msg/s"

    # limited: the burst and the rate, not the flood
    stored = query(database, "SELECT count(*) FROM telemetry_wristband WHERE device_id = 'wb-flood'")[0][0]
    assert stored <= 1000 + 50 * (SECONDS + 3), stored
    assert stored >= 1000
    # reported: counted, one dead letter per report interval, with the count
    wait_until(
        lambda: gw.decoder.rate_limiter is not None and gw.decoder.rate_limiter.dropped_total == acked - stored,
        what="every dropped message counted",
    )
    wait_until(
        lambda: query(database, "SELECT count(*) FROM dead_letters WHERE reason LIKE 'rate limited%%'")[0][0] >= 1,
        timeout_s=20,
        what="the flood reported as a dead letter",
    )
    reasons = [r for (r,) in query(database, "SELECT reason FROM dead_letters WHERE reason LIKE 'rate limited%%'")]
    reported = sum(int(r.split(":")[1].split()[0]) for r in reasons)
    assert all("wb-flood" in r for r in reasons)
    wait_until(
        lambda: (
            sum(
                int(r.split(":")[1].split()[0])
                for (r,) in query(database, "SELECT reason FROM dead_letters WHERE reason LIKE 'rate limited%%'")
            )
            == acked - stored
        ),
        timeout_s=20,
        what=f"all drops reported (so far {reported})",
    )
    # the others kept their latency
    latencies.sort()
    print(
        f"flood {achieved:.0f} msg/s from one device: stored {stored}, dropped {acked - stored:.0f}; "
        f"SOS of other devices paged in median {latencies[len(latencies) // 2]:.0f} ms, "
        f"max {latencies[-1]:.0f} ms"
    )
    assert latencies[-1] < 1500, latencies
