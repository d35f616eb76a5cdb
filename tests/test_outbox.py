"""The outbox against real PostgreSQL: summaries, per-phone call limits, provider fallback."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from gateway.notify.base import Outbound, PermanentError, Sent
from gateway.notify.outbox import OutboxSender, OutboxSettings
from gateway.storage.schema import upgrade
from tests.support import query

NOW = 1_795_300_000_000
PHONE = "+8613800000001"


class Recorder:
    """A provider that records what it was asked to send (and can refuse one channel)."""

    def __init__(self, name: str, channels: set[str], refuse: str | None = None) -> None:
        self.name = name
        self.channels = frozenset(channels)
        self.refuse = refuse
        self.sent: list[Outbound] = []

    async def send(self, message: Outbound) -> Sent:
        if message.channel == self.refuse:
            raise PermanentError(f"{self.name} cannot send {message.channel} to this number", code=21610)
        self.sent.append(message)
        return Sent(f"{self.name}-{len(self.sent)}", self.name)

    async def close(self) -> None:
        return None


def seed(dsn: str, pages: list[tuple[str, str]], provider: str | None = None) -> None:
    """One alert per page, each with a pending notification (kind, channel) to PHONE."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO elders (elder_id, name, profile) VALUES ('e1', '王秀英', %s)",
            (Jsonb({"address": "幸福路1号"}),),
        )
        for i, (kind, channel) in enumerate(pages):
            alert_id = conn.execute(
                "INSERT INTO alerts (alert_key, elder_id, device_id, kind, severity, state, policy, opened_at, "
                "last_seen_at) VALUES (%s, 'e1', 'wb-1', %s, 'critical', 'notifying', 'sos', "
                "to_timestamp(%s), to_timestamp(%s)) RETURNING alert_id",
                (f"e1:{kind}:{i}", kind, NOW / 1000, NOW / 1000),
            ).fetchone()[0]  # type: ignore[index]
            conn.execute(
                "INSERT INTO notifications (alert_id, purpose, tier, round, recipient_key, recipient_name, role, "
                "phone, language, channel, channels, provider, idempotency_key, next_attempt_at) VALUES "
                "(%s, 'page', 0, 1, 'contact:e1:son', '王强', 'family', %s, 'zh', %s, %s, %s, %s, "
                "to_timestamp(%s))",
                (alert_id, PHONE, channel, Jsonb(["sms", "voice"]), provider, f"k{i}", NOW / 1000),
            )


def send_all(dsn: str, notifiers: list[Any], **settings: Any) -> None:
    async def main() -> None:
        async with AsyncConnectionPool(dsn, min_size=1, max_size=4) as pool:
            sender = OutboxSender(pool, notifiers, OutboxSettings(**settings), lambda: NOW, seed=1)
            while await sender.run_once() > 0:
                pass

    asyncio.run(main())


def test_several_alerts_due_for_one_phone_go_as_one_summary(database: str) -> None:
    upgrade(database)
    seed(database, [("sos", "sms"), ("hypoglycaemia", "sms"), ("geofence_exit", "sms")])
    provider = Recorder("twilio", {"sms", "voice"})
    send_all(database, [provider])
    assert len(provider.sent) == 1
    text = provider.sent[0].text
    assert "王秀英" in text and text.count("A") >= 3
    assert query(
        database, "SELECT count(DISTINCT provider_sid), count(*) FROM notifications WHERE status = 'sent'"
    ) == [(1, 3)]


def test_calls_beyond_the_hourly_limit_to_one_phone_become_sms(database: str) -> None:
    upgrade(database)
    seed(database, [("sos", "voice")] * 4)
    provider = Recorder("twilio", {"sms", "voice"})
    send_all(database, [provider], calls_per_hour=2)
    channels = sorted(m.channel for m in provider.sent)
    assert channels.count("voice") == 2 and "sms" in channels
    reasons = query(database, "SELECT detail->>'reason' FROM alert_events WHERE event = 'notify_failover'")
    assert reasons and all("calls an hour" in r for (r,) in reasons)


def test_preferred_provider_refuses_and_the_next_provider_sends(database: str) -> None:
    upgrade(database)
    seed(database, [("sos", "sms")], provider="cn-cloud")
    preferred = Recorder("cn-cloud", {"sms"}, refuse="sms")
    fallback = Recorder("twilio", {"sms", "voice"})
    send_all(database, [fallback, preferred])
    assert [m.channel for m in fallback.sent] == ["sms"] and preferred.sent == []
    assert query(database, "SELECT status, provider FROM notifications") == [("sent", "twilio")]
