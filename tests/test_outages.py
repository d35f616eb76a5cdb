"""Faults at the size the promise is made for: Twilio out for 60 s, PostgreSQL out for 30 s.

Each test is bounded in time and runs on loopback against the real services.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from simulators.providers.twilio.server import FakeTwilio, running_in_thread
from simulators.services.postgres import LocalPostgres
from simulators.services.process import free_port
from tests.support import GatewayRunner, Publisher, count, query, wait_until

pytestmark = pytest.mark.slow

SID, TOKEN = "AC" + "7" * 32, "outage-token"
FAMILY, GRID, POST, HOTLINE = "+8613800000011", "+8613900000011", "+8613700000011", "+8640000000011"


def registry() -> dict[str, Any]:
    return {
        "elders": [
            {
                "id": "e1",
                "name": "李桂兰",
                "community": "c1",
                "grid": "g1",
                "contacts": [{"name": "李明", "phone": FAMILY, "channels": ["voice", "sms"]}],
                "devices": [{"id": "pg-1", "type": "pager"}, {"id": "wb-1", "type": "wristband"}],
            }
        ],
        "responders": [
            {
                "id": "grid",
                "name": "王芳",
                "role": "grid_worker",
                "phone": GRID,
                "grid": "g1",
                "channels": ["voice", "sms"],
            },
            {
                "id": "post",
                "name": "驿站",
                "role": "post_station",
                "phone": POST,
                "community": "c1",
                "channels": ["sms"],
            },
            {"id": "hotline", "name": "热线", "role": "hotline", "phone": HOTLINE, "channels": ["voice"]},
        ],
    }


ESCALATION: dict[str, Any] = {
    "policies": [
        {
            "name": "sos",
            "kinds": ["sos"],
            "start_tiers": 1,
            "tiers": [
                {"roles": {"family": ["voice", "sms"]}, "wait_s": 10},
                {"roles": {"grid_worker": ["voice"]}, "wait_s": 10},  # has sms too: the failover
                {"roles": {"post_station": ["sms"]}, "wait_s": 10},
                {"roles": {"hotline": ["voice"]}, "wait_s": 600},
            ],
        },
        {"name": "default", "kinds": ["*"], "tiers": [{"roles": {"hotline": ["sms"]}, "wait_s": 600}]},
    ]
}


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    twilio = FakeTwilio(SID, TOKEN)
    with running_in_thread(twilio) as running:
        yield running


def start(gateway: GatewayRunner, fake: FakeTwilio, tmp_path: Path, **notify: Any) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(registry(), allow_unicode=True))
    port = free_port()
    gateway.start(
        registry={"file": str(path)},
        escalation=ESCALATION,
        notify={
            "public_base_url": f"http://127.0.0.1:{port}",
            "http_port": port,
            "twilio": {
                "account_sid": SID,
                "auth_token": TOKEN,
                "sms_from": "+15005550006",
                "voice_from": "+15005550006",
                "base_url": fake.base_url,
                "timeout_s": 2,
            },
            **notify,
        },
    )


def press_sos(publisher: Publisher) -> None:
    publisher.publish("eldercare/v1/pager/pg-1/event", json.dumps({"ts": time.time_ns() // 1_000_000, "event": "sos"}))


def test_twilio_failing_for_60_s_every_tier_is_reached_once_after_it_recovers(
    gateway: GatewayRunner, publisher: Publisher, fake: FakeTwilio, database: str, tmp_path: Path
) -> None:
    start(gateway, fake, tmp_path, backoff_initial_s=0.5, backoff_max_s=4, max_attempts=4)
    fake.fail_for(60, "http500")
    outage_started = time.monotonic()
    press_sos(publisher)

    # during the outage: retried, failed over, and escalated on time (no answer from anyone)
    wait_until(
        lambda: query(database, "SELECT max(tier) FROM tier_firings") == [(3,)],
        timeout_s=55,
        what="all four tiers fired while Twilio refuses everything",
    )
    assert time.monotonic() - outage_started < 60
    assert not [m for m in fake.messages if m.accepted] and not [c for c in fake.calls if c.accepted]
    events = {e for (e,) in query(database, "SELECT event FROM alert_events")}
    assert "notify_failover" in events
    refused = len(fake.messages) + len(fake.calls)
    assert refused >= 8, f"only {refused} attempts during the outage"

    # after it: every person of every tier is reached, and nobody twice for the same tier
    people = {FAMILY, GRID, POST, HOTLINE}

    def everyone() -> set[str] | None:
        got = {m.to for m in fake.messages if m.accepted} | {c.to for c in fake.calls if c.accepted}
        return got if got >= people else None

    try:
        reached = fake.wait_until_sync(everyone, timeout_s=40, what="everyone reached after Twilio recovered")
    except TimeoutError:
        got = {m.to for m in fake.messages if m.accepted} | {c.to for c in fake.calls if c.accepted}
        pytest.fail(
            f"not reached: {people - got}; outbox: "
            + repr(
                query(
                    database,
                    "SELECT recipient_name, channel, status, attempts, next_attempt_at - now(), last_error "
                    "FROM notifications ORDER BY id",
                )
            )
        )
    assert reached == people
    time.sleep(3)  # anything that would be a repeat has had time to go out
    # once per channel the tier asked for (or the one that took over): nobody twice for one tier
    sends = Counter(
        [(m.to, "sms") for m in fake.messages if m.accepted] + [(c.to, "voice") for c in fake.calls if c.accepted]
    )
    assert max(sends.values()) == 1, sends
    assert query(database, "SELECT count(*) FROM notifications WHERE provider_sid IS NOT NULL") == [(len(sends),)]
    assert query(database, "SELECT count(*) FROM notifications WHERE status IN ('pending', 'sending')") == [(0,)]


def test_postgres_stopped_for_30_s_spools_pages_and_backfills(
    gateway: GatewayRunner,
    publisher: Publisher,
    fake: FakeTwilio,
    database: str,
    tmp_path: Path,
    postgres_server: LocalPostgres,
) -> None:
    start(gateway, fake, tmp_path)
    gw = gateway.gateway
    assert gw is not None
    t0 = time.time_ns() // 1_000_000

    def readings(first: int, n: int) -> list[tuple[str, bytes]]:
        return [
            (
                "eldercare/v1/wristband/wb-1/telemetry",
                json.dumps({"ts": t0 + (first + i) * 10, "hr": 72, "spo2": 97}).encode(),
            )
            for i in range(n)
        ]

    publisher.publish_many(readings(0, 300))
    wait_until(lambda: count(database, "telemetry_wristband") == 300, what="readings before the outage")

    postgres_server.stop("fast")
    stopped = time.monotonic()
    try:
        publisher.publish_many(readings(300, 1000))
        wait_until(lambda: not gw.database_up or None, timeout_s=10, what="the gateway notices the outage")
        press_sos(publisher)
        fake.wait_until_sync(
            lambda: [c for c in fake.calls if c.to == FAMILY] or None,
            timeout_s=15,
            what="the family called while the database is down",
        )
        publisher.publish_many(readings(1300, 1000))
        wait_until(lambda: gw.stats.spooled_messages >= 2001, what="everything spooled")
        time.sleep(max(0.0, 30 - (time.monotonic() - stopped)))
    finally:
        postgres_server.start()

    wait_until(
        lambda: count(database, "telemetry_wristband") == 2300, timeout_s=30, what="the spool back-filled after 30 s"
    )
    wait_until(lambda: gw.spool.is_empty(), what="spool drained")
    assert query(database, "SELECT count(DISTINCT time) FROM telemetry_wristband") == [(2300,)]
    wait_until(
        lambda: query(database, "SELECT kind FROM alerts") == [("sos",)],
        timeout_s=20,
        what="the SOS recorded as an alert",
    )
    assert query(database, "SELECT count(*) FROM device_events WHERE event = 'sos'") == [(1,)]
