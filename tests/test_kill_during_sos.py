"""The first promise: no emergency lost, even when the gateway is SIGKILLed mid-stream."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from simulators.providers.twilio.server import FakeTwilio, running_in_thread
from simulators.services.mosquitto import LocalMosquitto
from simulators.services.process import free_port
from tests.support import GatewayRunner, Publisher, ingest_connected, query, wait_until

pytestmark = pytest.mark.slow

SID, TOKEN = "AC" + "5" * 32, "kill-test-token"
ELDERS = 1_000
KILLS = 10
BANDS = 50  # background telemetry


def phone(i: int) -> str:
    return f"+86137{i:08d}"


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    twilio = FakeTwilio(SID, TOKEN)
    with running_in_thread(twilio) as running:
        yield running


def test_every_sos_reaches_its_first_tier_through_ten_sigkills_amid_telemetry(
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
                "devices": [{"id": f"pg-{i}", "type": "pager"}]
                + ([{"id": f"wb-{i}", "type": "wristband"}] if i < BANDS else []),
            }
            for i in range(ELDERS)
        ],
        "responders": [{"id": "hotline", "name": "热线", "role": "hotline", "phone": "+8640000000001"}],
    }
    (tmp_path / "registry.yaml").write_text(yaml.safe_dump(registry, allow_unicode=True))
    port = free_port()
    overrides: dict[str, Any] = {
        "registry": {"file": str(tmp_path / "registry.yaml")},
        "notify": {
            "http_port": port,
            "public_base_url": f"http://127.0.0.1:{port}",
            "lease_s": 3,
            "twilio": {
                "account_sid": SID,
                "auth_token": TOKEN,
                "sms_from": "+15005550006",
                "voice_from": "+15005550006",
                "base_url": fake.base_url,
            },
        },
    }
    rnd = random.Random(3)
    gateway.start_process(**overrides)
    wait_until(lambda: ingest_connected(gateway.log_text()), what="gateway up")
    pub = Publisher(broker.port)
    kills = sorted(rnd.sample(range(20, ELDERS - 20), KILLS))
    telemetry = Publisher(broker.port)
    stop = threading.Event()

    def background() -> None:  # 50 bands at about 10 readings/s each, through the kills
        n = 0
        while not stop.is_set():
            t = time.time_ns() // 1_000_000
            telemetry.publish_many(
                [
                    (
                        f"eldercare/v1/wristband/wb-{b}/telemetry",
                        json.dumps({"ts": t + b, "hr": 70 + n % 7, "spo2": 97}).encode(),
                    )
                    for b in range(BANDS)
                ]
            )
            n += 1
            time.sleep(0.1)

    feeder = threading.Thread(target=background, daemon=True)
    feeder.start()
    try:
        for i in range(ELDERS):
            pub.publish(
                f"eldercare/v1/pager/pg-{i}/event", json.dumps({"ts": time.time_ns() // 1_000_000, "event": "sos"})
            )
            time.sleep(rnd.uniform(0.0, 0.02))
            if i in kills:
                gateway.kill()
                gateway.start_process(**overrides)
        stop.set()
        feeder.join(10)
        wait_until(
            lambda: query(database, "SELECT count(*) FROM alerts WHERE kind = 'sos'") == [(ELDERS,)],
            timeout_s=180,
            what="an alert for every SOS",
        )
        reached = fake.wait_until_sync(
            lambda: (lambda seen: seen if len(seen) == ELDERS else None)(
                {m.to for m in fake.messages if m.accepted and m.to.startswith("+86137")}
            ),
            timeout_s=180,
            what="a page to every family",
        )
        assert reached == {phone(i) for i in range(ELDERS)}
        repeats = Counter(m.to for m in fake.messages if m.accepted and m.to.startswith("+86137"))
        doubled = sum(1 for n in repeats.values() if n > 1)
        stored = query(database, "SELECT count(*) FROM telemetry_wristband")[0][0]
        print(
            f"{ELDERS} SOS through {KILLS} SIGKILLs with {stored} telemetry rows stored meanwhile: all paged; "
            f"{doubled} families paged more than once (repeats are allowed, silence is not)"
        )
        assert stored > 0
        assert query(
            database,
            "SELECT count(*) FROM alerts a WHERE kind = 'sos' AND NOT EXISTS "
            "(SELECT 1 FROM tier_firings f WHERE f.alert_id = a.alert_id)",
        ) == [(0,)]
    finally:
        stop.set()
        pub.close()
        telemetry.close()
