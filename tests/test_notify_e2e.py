"""From an SOS over MQTT to SMS and calls at the fake Twilio, and answers coming back signed."""

from __future__ import annotations

import json
import resource
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from simulators.providers.twilio.server import FakeTwilio, running_in_thread
from simulators.services.process import free_port
from tests.support import GatewayRunner, Publisher, query, wait_until

SID = "AC" + "0" * 32
TOKEN = "test-auth-token-not-secret"
SON, DAUGHTER_US, GRID, HOTLINE = "+8613800000001", "+14155550100", "+8613900000001", "+8640000000001"
REGISTRY: dict[str, Any] = {
    "elders": [
        {
            "id": "e1",
            "name": "王秀英",
            "community": "幸福社区",
            "grid": "g1",
            "address": "幸福路12号3楼",
            "home": {"lat": 31.2304, "lon": 121.4737},
            "contacts": [
                {"name": "王强", "phone": SON, "priority": 1},
                {"name": "Mei Wang", "phone": DAUGHTER_US, "language": "en", "priority": 2, "channels": ["sms"]},
            ],
            "devices": [{"id": "pg-1", "type": "pager"}, {"id": "wb-1", "type": "wristband"}],
        }
    ],
    "responders": [
        {"id": "grid", "name": "王芳", "role": "grid_worker", "phone": GRID, "grid": "g1", "channels": ["voice"]},
        {"id": "hotline", "name": "热线", "role": "hotline", "phone": HOTLINE},
    ],
}
ESCALATION: dict[str, Any] = {
    "policies": [
        {
            "name": "sos",
            "kinds": ["sos"],
            "start_tiers": 2,
            "tiers": [
                {"roles": {"family": ["sms", "voice"]}, "wait_s": 3},
                {"roles": {"grid_worker": ["voice"]}, "wait_s": 3},
                {"roles": {"hotline": ["voice"]}, "wait_s": 3},
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


def start(gateway: GatewayRunner, fake: FakeTwilio, tmp_path: Path) -> str:
    registry = tmp_path / "registry.yaml"
    registry.write_text(yaml.safe_dump(REGISTRY, allow_unicode=True))
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    gateway.start(
        registry={"file": str(registry)},
        escalation=ESCALATION,
        notify={
            "public_base_url": public,
            "http_port": port,
            "backoff_initial_s": 0.2,
            "backoff_max_s": 0.5,
            "max_attempts": 3,
            "twilio": {
                "account_sid": SID,
                "auth_token": TOKEN,
                "sms_from": "+15005550006",
                "voice_from": "+15005550006",
                "base_url": fake.base_url,
                "timeout_s": 2,
            },
        },
    )
    return public


def sos(publisher: Publisher) -> None:
    publisher.publish("eldercare/v1/pager/pg-1/event", json.dumps({"ts": time.time_ns() // 1_000_000, "event": "sos"}))


def test_sos_pages_by_sms_and_voice_in_each_persons_language(
    gateway: GatewayRunner, publisher: Publisher, fake: FakeTwilio, database: str, tmp_path: Path
) -> None:
    start(gateway, fake, tmp_path)
    sos(publisher)
    fake.wait_until_sync(
        lambda: {m.to for m in fake.messages} >= {SON, DAUGHTER_US} or None,
        timeout_s=10,
        what="SMS to both family members",
    )
    fake.wait_until_sync(
        lambda: {c.to for c in fake.calls} >= {SON, GRID} or None,
        timeout_s=10,
        what="calls to the son and the grid worker",
    )
    son_sms = next(m.body for m in fake.messages if m.to == SON)
    assert "王秀英" in son_sms and "紧急" in son_sms and "请接听来电并按 1 确认" in son_sms
    assert "http" not in son_sms and "回复" not in son_sms  # China: no links, no reply promise
    us_sms = next(m.body for m in fake.messages if m.to == DAUGHTER_US)
    assert "Reply 1" in us_sms and "A1" in us_sms
    grid_call = next(c for c in fake.calls if c.to == GRID)
    assert grid_call.twiml and "<Gather" in grid_call.twiml and 'language="zh-CN"' in grid_call.twiml
    assert grid_call.gather_action and "/twilio/voice/gather/" in grid_call.gather_action
    wait_until(
        lambda: (
            query(database, "SELECT count(*) FROM notifications WHERE status = 'sent' OR status = 'delivered'")[0][0]
            >= 4
        ),
        what="outbox rows marked sent",
    )


def test_key_press_takes_the_alert_once_and_tells_the_others(
    gateway: GatewayRunner, publisher: Publisher, fake: FakeTwilio, database: str, tmp_path: Path
) -> None:
    start(gateway, fake, tmp_path)
    sos(publisher)
    call = fake.wait_until_sync(
        lambda: next((c for c in fake.calls if c.to == GRID), None), timeout_s=10, what="the grid worker's call"
    )
    assert call.sid is not None
    answer = fake.run_blocking(fake.press_key(call.sid, "1"))
    assert answer.status == 200 and "<Say" in answer.body
    assert query(database, "SELECT state, acknowledged_by FROM alerts") == [("acknowledged", "王芳")]
    again = fake.run_blocking(fake.redeliver(answer))  # Twilio retries the webhook
    assert again.status == 200
    assert query(database, "SELECT count(*) FROM alert_events WHERE event = 'acknowledged'") == [(1,)]
    fake.wait_until_sync(
        lambda: [m for m in fake.messages if m.to == DAUGHTER_US and "王芳" in m.body] or None,
        timeout_s=10,
        what="the daughter told that 王芳 took it",
    )
    time.sleep(4)  # past the grid tier's wait: an acknowledged alert pages nobody further
    assert not [c for c in fake.calls if c.to == HOTLINE]
    # later the grid worker reports arrival by replying 3
    public = f"http://127.0.0.1:{gateway.gateway.http_port}" if gateway.gateway else ""
    arrived = fake.run_blocking(fake.reply_sms(GRID, "+15005550006", "3", f"{public}/twilio/sms"))
    assert arrived.status == 200
    assert query(database, "SELECT state FROM alerts") == [("on_scene",)]


def test_sms_reply_takes_the_alert_where_replies_work(
    gateway: GatewayRunner, publisher: Publisher, fake: FakeTwilio, database: str, tmp_path: Path
) -> None:
    public = start(gateway, fake, tmp_path)
    sos(publisher)
    fake.wait_for_messages_sync(2, timeout_s=10)
    reply = fake.run_blocking(fake.reply_sms(DAUGHTER_US, "+15005550006", "1", f"{public}/twilio/sms"))
    assert reply.status == 200 and "A1" in reply.body
    assert query(database, "SELECT acknowledged_by FROM alerts") == [("Mei Wang",)]


def test_unsigned_and_forged_webhooks_are_refused(
    gateway: GatewayRunner, publisher: Publisher, fake: FakeTwilio, database: str, tmp_path: Path
) -> None:
    public = start(gateway, fake, tmp_path)
    sos(publisher)
    call = fake.wait_until_sync(lambda: next((c for c in fake.calls if c.to == GRID), None), timeout_s=10)
    assert call.sid is not None
    assert fake.run_blocking(fake.press_key(call.sid, "1", unsigned=True)).status == 403
    assert fake.run_blocking(fake.press_key(call.sid, "1", bad_signature=True)).status == 403
    forged = fake.run_blocking(
        fake.reply_sms(DAUGHTER_US, "+15005550006", "1", f"{public}/twilio/sms", bad_signature=True)
    )
    assert forged.status == 403
    assert query(database, "SELECT state FROM alerts") == [("notifying",)]


def test_invalid_number_fails_over_and_an_outage_is_retried(
    gateway: GatewayRunner, publisher: Publisher, fake: FakeTwilio, database: str, tmp_path: Path
) -> None:
    fake.fail_number(SON, "invalid_number")
    fake.fail_next(2, "http500", api="messages")
    start(gateway, fake, tmp_path)
    sos(publisher)
    wait_until(
        lambda: (
            query(database, "SELECT count(*) FROM alert_events WHERE event IN ('notify_failover', 'notify_failed')")[0][
                0
            ]
            >= 2
        ),
        timeout_s=15,
        what="the son's call and SMS both failed permanently",
    )
    events = query(
        database, "SELECT event, detail->>'reason' FROM alert_events WHERE event LIKE 'notify_%%' ORDER BY id"
    )
    assert any("21211" in (reason or "") for _, reason in events)
    # the daughter's SMS survived two 500s: retried with back-off until accepted
    fake.wait_until_sync(
        lambda: [m for m in fake.messages if m.to == DAUGHTER_US and m.accepted] or None,
        timeout_s=15,
        what="the daughter's SMS after retries",
    )
    attempts = [m for m in fake.messages if m.to == DAUGHTER_US]
    assert len(attempts) >= 2


def test_a_missed_call_counts_as_no_answer(
    gateway: GatewayRunner, publisher: Publisher, fake: FakeTwilio, database: str, tmp_path: Path
) -> None:
    fake.answer_as(GRID, "no-answer")
    start(gateway, fake, tmp_path)
    sos(publisher)
    wait_until(
        lambda: query(database, "SELECT status FROM notifications WHERE phone = %s", (GRID,)) == [("no_answer",)],
        timeout_s=15,
        what="the grid worker's call marked no answer",
    )
    # nobody took it: the hotline tier is reached after the waits
    fake.wait_until_sync(
        lambda: [c for c in fake.calls if c.to == HOTLINE] or None, timeout_s=15, what="the hotline called"
    )


def test_an_sos_during_a_database_outage_still_pages_and_is_recorded_later(
    gateway: GatewayRunner,
    publisher: Publisher,
    fake: FakeTwilio,
    database: str,
    tmp_path: Path,
    postgres_server: Any,
) -> None:
    start(gateway, fake, tmp_path)
    postgres_server.stop("fast")
    try:
        sos(publisher)
        fake.wait_until_sync(
            lambda: {m.to for m in fake.messages if m.accepted} >= {SON, DAUGHTER_US} or None,
            timeout_s=15,
            what="family paged while the database is down",
        )
        fake.wait_until_sync(
            lambda: [c for c in fake.calls if c.to == GRID] or None,
            timeout_s=15,
            what="grid worker called while the database is down",
        )
    finally:
        postgres_server.start()
    wait_until(
        lambda: query(database, "SELECT kind FROM alerts") == [("sos",)],
        timeout_s=30,
        what="the SOS recorded as an alert once the database is back",
    )


def _rss_mb() -> float:
    """This process's resident memory now (the gateway runs in a thread of it)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_huge_unsigned_webhook_is_refused_before_the_gateway_holds_it(
    gateway: GatewayRunner, fake: FakeTwilio, tmp_path: Path
) -> None:
    """102 MB unsigned to /twilio/sms, streamed (chunked, no length): 413 after a few KB, memory flat."""
    public = start(gateway, fake, tmp_path)
    port = int(public.rsplit(":", 1)[1])
    before = _rss_mb()
    chunk = b"x" * (1024 * 1024)
    sent = 0
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            b"POST /twilio/sms HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        while sent < 102 * len(chunk):
            if select.select([sock], [], [], 0)[0]:
                break  # the gateway has answered (or closed): stop sending
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        closed = False
        deadline = time.monotonic() + 20
        while not closed and time.monotonic() < deadline:
            if not select.select([sock], [], [], 1)[0]:
                continue
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data = b""
            answer += data
            closed = not data  # the gateway closed its side: it reads no more of the body
    grew = _rss_mb() - before
    assert answer.startswith(b"HTTP/1.1 413") and closed, (answer[:200], sent, closed)
    assert sent <= 16 * len(chunk), sent  # it answered long before the 102 MB were sent
    assert grew < 40, grew
