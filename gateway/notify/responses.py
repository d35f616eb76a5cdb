"""What a person's answer does, whichever provider carried it: a key press, an SMS reply, a call's end.

Twilio's webhooks and Aliyun's and Tencent's receipts differ in shape and in how they
are authenticated; once read, they all come here. Providers retry their callbacks, so
every effect is keyed (``webhook_receipts``) and applied once. A receipt is matched to
the notification it names only when the provider's id agrees with the one the outbox
recorded; until the outbox has written it (a callback can beat that write by a moment)
we wait ``SID_WAIT_S``, and the receipt's key is taken only after it matched.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool

from gateway.alerting import store
from gateway.alerting.actions import AlertError
from gateway.alerting.engine import AlertEngine
from gateway.notify.base import redact_phone

log = logging.getLogger(__name__)

REPLY = re.compile(r"^\s*([123])\s*(A?\d+)?\s*$", re.IGNORECASE)
SID_WAIT_S = 3.0
REPLY_WINDOW_H = 24  # an SMS reply answers a page sent to that phone in the last day


@dataclass(frozen=True, slots=True)
class Paged:
    """One notification: the alert it was about and the person it went to."""

    notification_id: int
    alert_id: int
    name: str
    key: str
    language: str
    phone: str


class Responses:
    def __init__(self, pool: AsyncConnectionPool, engine: AlertEngine, clock_ms: Callable[[], int]) -> None:
        self.pool = pool
        self.engine = engine
        self.clock_ms = clock_ms
        self.ignored = 0  # callbacks that named another call or message than ours

    async def first_time(self, key: str) -> bool:
        """True once per key: a provider's retry of the same callback is acknowledged and not applied."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO webhook_receipts (receipt) VALUES (%s) ON CONFLICT DO NOTHING", (key,)
            )
            return cur.rowcount == 1

    async def _row_within_wait(
        self, sql: str, params: tuple[object, ...], ready: Callable[[tuple[Any, ...] | None], bool]
    ) -> tuple[Any, ...] | None:
        """Query until ``ready(row)`` or ``SID_WAIT_S`` has passed: the outbox may not have written the id yet."""
        deadline = asyncio.get_running_loop().time() + SID_WAIT_S
        while True:
            async with self.pool.connection() as conn:
                cur = await conn.execute(sql, params)
                row = await cur.fetchone()
            if ready(row) or asyncio.get_running_loop().time() >= deadline:
                return row
            await asyncio.sleep(0.1)

    async def notification(self, nid: int, provider_sid: str, provider: str | None = None) -> Paged | None:
        """The notification ``nid`` if it was sent as ``provider_sid``."""
        row = await self._row_within_wait(
            "SELECT provider_sid, provider, alert_id, recipient_name, recipient_key, language, phone "
            "FROM notifications WHERE id = %s",
            (nid,),
            lambda row: row is None or row[0] is not None,
        )
        if row is None:
            return None
        if row[0] != provider_sid or (provider is not None and row[1] != provider):
            self.ignored += 1
            log.warning("ignored a callback for notification %d: it names another call or message", nid)
            return None
        return Paged(nid, *row[2:])

    async def by_provider_sid(self, provider: str, provider_sid: str) -> Paged | None:
        """The notification sent through ``provider`` as ``provider_sid`` (for receipts that carry no id of ours)."""
        row = await self._row_within_wait(
            "SELECT id, alert_id, recipient_name, recipient_key, language, phone FROM notifications "
            "WHERE provider = %s AND provider_sid = %s ORDER BY id DESC LIMIT 1",
            (provider, provider_sid),
            lambda row: row is not None,
        )
        if row is None:
            self.ignored += 1
            log.warning("ignored a %s callback: no notification was sent as that call or message", provider)
            return None
        return Paged(*row)

    async def paged_for_reply(self, phone: str, code: str | None) -> Paged | None:
        """The page an SMS reply from ``phone`` answers: the named alert, else the newest open one.

        Aliyun's and Tencent's reply pushes carry no id of the message they answer, so a
        reply is matched by the alert code printed in every SMS, the phone and the time.
        """
        since = store.ts(self.clock_ms() - REPLY_WINDOW_H * 3_600_000)
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT n.id, n.alert_id, n.recipient_name, n.recipient_key, n.language, n.phone FROM notifications n "
                "JOIN alerts a USING (alert_id) WHERE n.phone = %s AND n.purpose = 'page' "
                "AND a.state <> 'resolved' AND a.opened_at > %s AND (%s::text IS NULL OR a.code = upper(%s) "
                "OR a.alert_id::text = %s) ORDER BY a.opened_at DESC, n.id DESC LIMIT 1",
                (phone, since, code, code, code),
            )
            row = await cur.fetchone()
        if row is None:
            log.info("an SMS reply from %s matched no open alert", redact_phone(phone))
            return None
        return Paged(*row)

    async def answer(self, paged: Paged, channel: str, digit: str) -> str:
        """Apply 1 (take), 2 (pass on) or 3 (on scene); what to tell the person."""
        try:
            if digit == "3":
                alert = await self.engine.on_scene(paged.alert_id, paged.name, channel)
                return f"已记录到达 {alert.code} / On scene at {alert.code}"
            if digit == "1":
                alert = await self.engine.acknowledge(paged.alert_id, paged.name, channel, actor_key=paged.key)
                if alert.acknowledged_by != paged.name:
                    return f"{alert.acknowledged_by} 已在处理 {alert.code} / already taken by {alert.acknowledged_by}"
                return f"已确认，请尽快前往 {alert.code} / You have taken {alert.code}"
            await self.engine.pass_on(paged.alert_id, paged.name, channel, actor_key=paged.key)
            return "已转给下一位 / Passed on"
        except AlertError as error:
            return f"{error}"

    async def taken_by(self, alert_id: int) -> str | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT acknowledged_by FROM alerts WHERE alert_id = %s", (alert_id,))
            row = await cur.fetchone()
        return row[0] if row else None

    async def mark(self, nid: int, status: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE notifications SET status = %s, updated_at = %s WHERE id = %s",
                (status, store.ts(self.clock_ms()), nid),
            )

    async def settle(self, nid: int, new: str | None, provider_status: str | None, *, ended: bool = False) -> None:
        """Record a delivery or call outcome: ``new`` (delivered, undelivered, no_answer), or for
        ``ended`` (a call that ended) no_answer unless someone pressed a key. An answered
        notification keeps its status; the trail says what happened."""
        now = self.clock_ms()
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT alert_id, status, recipient_name, channel FROM notifications WHERE id = %s FOR UPDATE", (nid,)
            )
            row = await cur.fetchone()
            if row is None:
                return
            alert_id, current, name, channel = row
            if new is None and ended and current != "answered":
                new = "no_answer"  # the call ended without a key press
            if new and current not in ("answered", new):
                await conn.execute(
                    "UPDATE notifications SET status = %s, updated_at = %s WHERE id = %s", (new, store.ts(now), nid)
                )
                await store.event(
                    conn,
                    alert_id,
                    now,
                    f"notification_{new}",
                    actor=name,
                    channel=channel,
                    provider_status=provider_status,
                )
