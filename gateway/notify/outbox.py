"""The outbox sender: every notification row is sent, retried, failed over, or recorded failed.

Rows are written by the alert engine before anything is sent. The sender claims due
rows (``FOR UPDATE SKIP LOCKED``) and marks them ``sending`` with a lease; if the
process dies mid-send the lease runs out and another sender (or the restarted one)
sends again: a crash can cause a repeat, never a silence. Then:

* accepted by the provider -> ``sent`` with the provider's id (callbacks refine it);
* retryable failure -> back to ``pending`` after exponential back-off with jitter;
* permanent failure or retries exhausted -> ``failed``, and a new row on the person's
  other channel (voice <-> SMS) if they have one; otherwise it counts as no answer
  and the tier escalates on its timer.

Carriers block numbers that call or text one phone too often: calls beyond
``calls_per_hour`` to a phone become SMS, and several alerts due for one phone at
once go out as one summary SMS.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from gateway.alerting import store
from gateway.notify import template_fields
from gateway.notify.base import Notifier, NotifyError, Outbound, PermanentError, RetryableError, Sent, redact_phone
from gateway.notify.routing import CHINA_PREFIX, route
from gateway.notify.templates import (
    MessageContext,
    render_sms,
    render_summary_sms,
    render_voice_twiml,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutboxSettings:
    public_base_url: str = "http://127.0.0.1:8080"
    max_attempts: int = 5
    backoff_initial_s: float = 2.0
    backoff_max_s: float = 60.0
    lease_s: float = 20.0
    calls_per_hour: int = 6
    concurrency: int = 16
    # a page whose last channel keeps failing for a transient reason (a provider outage) is
    # retried this long, at the capped back-off, while its alert still waits for someone
    keep_trying_s: float = 3600.0
    no_reply_prefixes: tuple[str, ...] = (CHINA_PREFIX,)  # Twilio: no two-way SMS, no URLs to China
    china_order: tuple[str, ...] = ("aliyun", "tencent", "twilio")  # who carries +86 numbers first


def backoff_s(attempt: int, settings: OutboxSettings, rnd: random.Random) -> float:
    """Exponential back-off with full jitter: 2, 4, 8 ... s, capped, times a random 0.5-1."""
    base = min(settings.backoff_max_s, settings.backoff_initial_s * 2.0 ** max(0, attempt - 1))
    return float(base * (0.5 + rnd.random() / 2))


_CLAIM = """
UPDATE notifications SET status = 'sending', attempts = attempts + 1, next_attempt_at = %(lease)s,
       updated_at = %(now)s
WHERE id IN (SELECT id FROM notifications
             WHERE status IN ('pending', 'sending') AND next_attempt_at <= %(now)s
             ORDER BY next_attempt_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
RETURNING id, alert_id, purpose, tier, round, recipient_key, recipient_name, role, phone, language,
          channel, channels, provider, idempotency_key, attempts
"""

_CONTEXT_COLUMNS = """
a.alert_id, a.code, a.kind, a.severity, a.state, a.opened_at, a.evidence, a.acknowledged_by, a.outcome,
coalesce(e.name, a.device_id) AS elder_name, coalesce(e.profile->>'address', '') AS address,
(e.profile->'home'->>'lat')::float8 AS lat, (e.profile->'home'->>'lon')::float8 AS lon
"""

_CONTEXT = f"SELECT {_CONTEXT_COLUMNS} FROM alerts a LEFT JOIN elders e USING (elder_id) WHERE a.alert_id = ANY(%s)"

_RECENT_CALLS = (
    "SELECT count(*) FROM notifications v WHERE v.channel = 'voice' AND v.status NOT IN "
    "('pending', 'sending', 'failed') AND v.updated_at > %(hour_ago)s AND v.phone = c.phone"
)

# The rows the engine created already claimed: take them only while that first lease holds
# (attempts = 1, lease not run out) and renew it, so the poller cannot send them as well.
# One round trip brings the rows, their alerts' context and each phone's calls in the last
# hour: this is the path between an SOS and the first page.
_CLAIMED = f"""
WITH c AS (
    UPDATE notifications SET next_attempt_at = %(lease)s, updated_at = %(now)s
    WHERE id = ANY(%(ids)s) AND status = 'sending' AND attempts = 1 AND next_attempt_at > %(now)s
    RETURNING id, alert_id, purpose, tier, round, recipient_key, recipient_name, role, phone, language, channel,
              channels, provider, idempotency_key, attempts)
SELECT c.*, CASE WHEN c.channel = 'voice' THEN ({_RECENT_CALLS}) END AS recent_calls, {_CONTEXT_COLUMNS}
FROM c JOIN alerts a USING (alert_id) LEFT JOIN elders e USING (elder_id)
ORDER BY c.id
"""

_ROW_COLUMNS = (
    "id",
    "alert_id",
    "purpose",
    "tier",
    "round",
    "recipient_key",
    "recipient_name",
    "role",
    "phone",
    "language",
    "channel",
    "channels",
    "provider",
    "idempotency_key",
    "attempts",
    "recent_calls",
)


class OutboxSender:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        notifiers: Sequence[Notifier] | Callable[[], Sequence[Notifier]],
        settings: OutboxSettings,
        clock_ms: Callable[[], int],
        seed: int | None = None,
    ) -> None:
        """``notifiers``: the list, or how to build it when first needed (the providers' SDKs
        cost ~0.15 s to import, which a restarting gateway spends after it is up, not before)."""
        self.pool = pool
        self._notifiers = None if callable(notifiers) else list(notifiers)
        self._build = notifiers if callable(notifiers) else None
        self.settings = settings
        self.clock_ms = clock_ms
        self.rnd = random.Random(seed)
        self.sent_count: dict[str, int] = {}
        self.failed_count: dict[str, int] = {}

    @property
    def notifiers(self) -> list[Notifier]:
        if self._notifiers is None:
            assert self._build is not None
            self._notifiers = list(self._build())
        return self._notifiers

    async def close(self) -> None:
        for notifier in self._notifiers or ():  # never built: nothing to close
            await notifier.close()

    def _notifiers_for(self, channel: str, preferred: str | None, phone: str) -> list[Notifier]:
        return route(self.notifiers, channel, phone, preferred, self.settings.china_order)

    async def run_once(self, limit: int = 50) -> int:
        """Claim and send what is due; return how many rows were handled."""
        now = self.clock_ms()
        async with self.pool.connection() as conn, conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                _CLAIM,
                {"now": store.ts(now), "limit": limit, "lease": store.ts(now + int(self.settings.lease_s * 1000))},
            )
            rows = list(await cur.fetchall())
            if not rows:
                return 0
            await cur.execute(_CONTEXT, ([r["alert_id"] for r in rows],))
            contexts = {c["alert_id"]: c for c in await cur.fetchall()}
        await self._dispatch(rows, contexts, now)
        return len(rows)

    async def send_claimed(self, ids: list[int]) -> None:
        """Send rows the alert engine created already claimed (the low-latency path)."""
        now = self.clock_ms()
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                _CLAIMED,
                {
                    "ids": ids,
                    "now": store.ts(now),
                    "hour_ago": store.ts(now - 3_600_000),
                    "lease": store.ts(now + int(self.settings.lease_s * 1000)),
                },
            )
            joined = list(await cur.fetchall())
        if not joined:
            return
        rows = [{k: r[k] for k in _ROW_COLUMNS} for r in joined]
        contexts = {
            r["alert_id"]: {k: v for k, v in r.items() if k not in _ROW_COLUMNS or k == "alert_id"} for r in joined
        }
        await self._dispatch(rows, contexts, now)

    async def _dispatch(self, rows: list[dict[str, Any]], contexts: dict[int, dict[str, Any]], now: int) -> None:
        rows = await self._rate_limit(rows, now)
        groups = self._group(rows)
        semaphore = asyncio.Semaphore(self.settings.concurrency)

        async def one(group: list[dict[str, Any]]) -> None:
            async with semaphore:
                await self._send(group, contexts, now)

        await asyncio.gather(*(one(g) for g in groups))

    def _group(self, rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        """SMS pages due for one phone at once travel as one summary message."""
        by_phone: dict[str, list[dict[str, Any]]] = {}
        groups: list[list[dict[str, Any]]] = []
        for row in rows:
            if row["channel"] == "sms" and row["purpose"] == "page":
                by_phone.setdefault(row["phone"], []).append(row)
            else:
                groups.append([row])
        groups.extend(by_phone.values())
        return groups

    async def _rate_limit(self, rows: list[dict[str, Any]], now: int) -> list[dict[str, Any]]:
        calls = [r for r in rows if r["channel"] == "voice"]
        if not calls:
            return rows
        if all(r.get("recent_calls") is not None for r in calls):  # counted when the rows were claimed
            recent = {r["phone"]: int(r["recent_calls"]) for r in calls}
        else:
            recent = await self._recent_calls([r["phone"] for r in calls], now)
        out = []
        for row in rows:
            if row["channel"] == "voice":
                recent[row["phone"]] = recent.get(row["phone"], 0) + 1
                if recent[row["phone"]] > self.settings.calls_per_hour and "sms" in row["channels"]:
                    await self._failover(
                        row, f"more than {self.settings.calls_per_hour} calls an hour to this phone", now, to="sms"
                    )
                    continue
            out.append(row)
        return out

    async def _recent_calls(self, phones: list[str], now: int) -> dict[str, int]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT phone, count(*) FROM notifications WHERE channel = 'voice' AND status NOT IN "
                "('pending', 'sending', 'failed') AND updated_at > %s AND phone = ANY(%s) GROUP BY phone",
                (store.ts(now - 3_600_000), phones),
            )
            return {phone: int(n) for phone, n in await cur.fetchall()}

    def _context(self, ctx: dict[str, Any], row: dict[str, Any]) -> MessageContext:
        evidence = ctx["evidence"] or {}
        # where the elder is: the fix that triggered the alert (a geofence exit), else home
        lat, lon = (
            (evidence["lat"], evidence["lon"]) if "lat" in evidence and "lon" in evidence else (ctx["lat"], ctx["lon"])
        )
        return MessageContext(
            elder_name=ctx["elder_name"],
            kind=ctx["kind"],
            severity=ctx["severity"],
            when_ms=store.ms(ctx["opened_at"]) or 0,
            alert_code=ctx["code"],
            address=ctx["address"],
            lat=lat,
            lon=lon,
            evidence=evidence,
            taken_by=ctx["acknowledged_by"],
            outcome=ctx["outcome"],
            role=row["role"],
            recipient_language=row["language"],
        )

    def _outbound(self, group: list[dict[str, Any]], contexts: dict[int, dict[str, Any]]) -> Outbound:
        row = group[0]
        base = self.settings.public_base_url.rstrip("/")
        china = row["phone"].startswith(self.settings.no_reply_prefixes)
        twiml = None
        every = [self._context(contexts[r["alert_id"]], r) for r in group]
        if len(group) > 1:
            text = render_summary_sms(
                every,
                replies_supported=not china,
                links_allowed=not china,
            )
        else:
            ctx = every[0]
            text = render_sms(ctx, row["purpose"], replies_supported=not china, links_allowed=not china)
            if row["channel"] == "voice":
                twiml = render_voice_twiml(ctx, f"{base}/twilio/voice/gather/{row['id']}")
        return Outbound(
            notification_id=row["id"],
            alert_id=row["alert_id"],
            purpose=row["purpose"],
            channel=row["channel"],
            phone=row["phone"],
            language=row["language"],
            recipient_name=row["recipient_name"],
            text=text,
            twiml=twiml,
            callback_url=f"{base}/twilio/status/{row['id']}",
            kind=contexts[row["alert_id"]]["kind"],
            summary=len(group) > 1,
            fields=template_fields.fields(every),
        )

    async def _send(self, group: list[dict[str, Any]], contexts: dict[int, dict[str, Any]], now: int) -> None:
        row = group[0]
        message = self._outbound(group, contexts)
        error: NotifyError = PermanentError(f"no notifier for channel {row['channel']}")
        retryable = False
        for notifier in self._notifiers_for(row["channel"], row["provider"], row["phone"]):
            try:
                sent = await notifier.send(message)
            except NotifyError as failure:
                # the next provider for this person at once, whatever the failure: the tier's
                # wait is running. If all fail, a retry (after back-off) asks them all again.
                error, retryable = failure, retryable or failure.retryable
                log.warning(
                    "%s via %s to %s failed: %s", row["channel"], notifier.name, redact_phone(row["phone"]), failure
                )
                continue
            await self._sent(group, sent, now)
            return
        if retryable and not error.retryable:
            error = RetryableError(f"every provider failed, one for a passing reason; last: {error}")
        for each in group:
            if error.retryable and each["attempts"] < self.settings.max_attempts:
                await self._retry(each, error, now)
            else:
                keep = error.retryable and self._still_waiting(each, contexts, now)
                await self._failover(each, str(error), now, keep_trying=keep)

    def _still_waiting(self, row: dict[str, Any], contexts: dict[int, dict[str, Any]], now: int) -> bool:
        """A page whose alert nobody has taken yet, not older than ``keep_trying_s``.

        Such a page, failing for a transient reason (a provider outage) beyond its
        retries, is kept being tried when no other channel to this person takes over.
        Escalation does not wait for it (the tier's wait runs out and the next tier is
        paged); it means that once the provider is back, everyone paged during the
        outage is reached, once per channel, instead of silently never.
        """
        if row["purpose"] != "page":
            return False
        alert = contexts.get(row["alert_id"])
        if alert is None or alert["state"] not in ("confirming", "notifying"):
            return False
        age_s = (now - (store.ms(alert["opened_at"]) or now)) / 1000
        return age_s < self.settings.keep_trying_s

    async def _sent(self, group: list[dict[str, Any]], sent: Sent, now: int) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            for row in group:
                await conn.execute(
                    "UPDATE notifications SET status = 'sent', provider_sid = %s, provider = %s, "
                    "last_error = NULL, updated_at = %s WHERE id = %s",
                    (sent.provider_sid, sent.provider, store.ts(now), row["id"]),
                )
                await store.event(
                    conn,
                    row["alert_id"],
                    now,
                    "notified",
                    actor=row["recipient_name"],
                    channel=row["channel"],
                    purpose=row["purpose"],
                    tier=row["tier"],
                    summary=len(group) > 1,
                )
        self.sent_count[row["channel"]] = self.sent_count.get(row["channel"], 0) + len(group)

    async def _retry(self, row: dict[str, Any], error: NotifyError, now: int) -> None:
        delay = backoff_s(row["attempts"], self.settings, self.rnd)
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE notifications SET status = 'pending', next_attempt_at = %s, last_error = %s, "
                "updated_at = %s WHERE id = %s",
                (store.ts(now + int(delay * 1000)), str(error)[:500], store.ts(now), row["id"]),
            )

    async def _failover(
        self, row: dict[str, Any], reason: str, now: int, to: str | None = None, *, keep_trying: bool = False
    ) -> None:
        """This channel is done for this person: try their other channel, else record no answer.

        With ``keep_trying`` and no other channel taking over, the row stays pending at the
        capped back-off instead (said once in the trail, not at every attempt).
        """
        other = to or ("sms" if row["channel"] == "voice" else "voice")
        if row["attempts"] <= self.settings.max_attempts:  # a row kept trying is counted once
            self.failed_count[row["channel"]] = self.failed_count.get(row["channel"], 0) + 1
        async with self.pool.connection() as conn, conn.transaction():
            inserted = 0
            if other in row["channels"] and not row["idempotency_key"].endswith(":failover"):
                cur = await conn.execute(
                    "INSERT INTO notifications (alert_id, purpose, tier, round, recipient_key, recipient_name, "
                    "role, phone, language, channel, channels, provider, idempotency_key, next_attempt_at) "
                    "SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s WHERE NOT EXISTS ("
                    "SELECT 1 FROM notifications WHERE alert_id = %s AND recipient_key = %s AND channel = %s "
                    "AND purpose = %s AND tier IS NOT DISTINCT FROM %s AND round IS NOT DISTINCT FROM %s "
                    "AND status <> 'failed') ON CONFLICT DO NOTHING",
                    (
                        row["alert_id"],
                        row["purpose"],
                        row["tier"],
                        row["round"],
                        row["recipient_key"],
                        row["recipient_name"],
                        row["role"],
                        row["phone"],
                        row["language"],
                        other,
                        Jsonb(row["channels"]),
                        row["provider"],
                        f"{row['idempotency_key']}:failover",
                        store.ts(now),
                        row["alert_id"],
                        row["recipient_key"],
                        other,
                        row["purpose"],
                        row["tier"],
                        row["round"],
                    ),
                )
                inserted = cur.rowcount
            if keep_trying and not inserted:
                delay = backoff_s(row["attempts"], self.settings, self.rnd)
                await conn.execute(
                    "UPDATE notifications SET status = 'pending', next_attempt_at = %s, last_error = %s, "
                    "updated_at = %s WHERE id = %s",
                    (store.ts(now + int(delay * 1000)), reason[:500], store.ts(now), row["id"]),
                )
                if row["attempts"] == self.settings.max_attempts:
                    await store.event(
                        conn,
                        row["alert_id"],
                        now,
                        "notify_failed",
                        actor=row["recipient_name"],
                        channel=row["channel"],
                        reason=reason[:200],
                        still_trying=True,
                    )
                return
            await conn.execute(
                "UPDATE notifications SET status = 'failed', last_error = %s, updated_at = %s WHERE id = %s",
                (reason[:500], store.ts(now), row["id"]),
            )
            await store.event(
                conn,
                row["alert_id"],
                now,
                "notify_failover" if inserted else "notify_failed",
                actor=row["recipient_name"],
                channel=row["channel"],
                reason=reason[:200],
                to_channel=other if inserted else None,
            )
