"""Twilio's webhooks: SMS replies, key presses, delivery and call status. All signed.

A body over 64 KiB is refused with 413 as it arrives, before anything is parsed (an
unsigned 100 MB POST costs no memory). Every request's ``X-Twilio-Signature`` is then
checked against the public URL Twilio called (``public_base_url`` + path); an unsigned or wrongly
signed request gets 403 and a log line, a signed one without its message or call id
(or with a NUL, which Twilio never sends) 400. Twilio retries webhooks, so each effect
is applied once: receipts are keyed by the message or call id (and digits).

* ``POST /twilio/sms`` — an incoming SMS. "1" (optionally with an alert code,
  "1 A17") takes the most recent open alert paged to that phone, or the named one.
* ``POST /twilio/voice/gather/{notification_id}`` — the key pressed during our call:
  1 takes the alert, 2 passes it on (the tier stops waiting for this person), 3 says
  "I have arrived" (on scene). SMS replies use the same digits. The ``CallSid`` must
  be the call this notification was placed as, or the press is ignored.
* ``POST /twilio/status/{notification_id}`` — delivery or call progress; a missed,
  busy or failed call counts as no answer. It too must name this notification's sid.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from gateway.alerting import store
from gateway.alerting.actions import AlertError
from gateway.alerting.engine import AlertEngine
from gateway.notify.base import redact_phone
from gateway.notify.templates import render_gather_reply

log = logging.getLogger(__name__)

_REPLY = re.compile(r"^\s*([123])\s*(A?\d+)?\s*$", re.IGNORECASE)
MAX_BODY_BYTES = 64 * 1024  # Twilio's callbacks are a few KB (an SMS body is at most 1,600 characters)
SID_WAIT_S = 3.0  # a callback may beat the outbox's write of the call's sid by a moment
NO_ANSWER = frozenset({"no-answer", "busy", "failed", "canceled"})
DELIVERY_FAILED = frozenset({"failed", "undelivered"})


def twiml(body: str = "") -> Response:
    return Response(f'<?xml version="1.0" encoding="UTF-8"?><Response>{body}</Response>', media_type="application/xml")


class TwilioWebhooks:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        engine: AlertEngine,
        auth_token: str,
        public_base_url: str,
        clock_ms: Callable[[], int],
    ) -> None:
        self.pool = pool
        self.engine = engine
        self.validator = RequestValidator(auth_token)
        self.public = public_base_url.rstrip("/")
        self.clock_ms = clock_ms
        self.refused = 0

    def routes(self) -> list[Route]:
        return [
            Route("/twilio/sms", self.sms, methods=["POST"]),
            Route("/twilio/voice/gather/{notification_id:int}", self.gather, methods=["POST"]),
            Route("/twilio/status/{notification_id:int}", self.status, methods=["POST"]),
        ]

    async def _verified(self, request: Request, *required: tuple[str, ...]) -> dict[str, str] | Response:
        """The signed parameters, or the refusal: 403 unsigned, 400 signed but not what Twilio sends.

        ``required`` lists groups of parameter names of which each group needs one.
        """
        raw = await _body_within(request, MAX_BODY_BYTES)
        if raw is None:
            self.refused += 1
            log.warning("refused a webhook to %s: body over %d bytes", request.url.path, MAX_BODY_BYTES)
            # close: the rest of the body is not read, so the connection cannot carry another request
            return PlainTextResponse("request body too large", status_code=413, headers={"Connection": "close"})
        params = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        url = self.public + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        signature = request.headers.get("X-Twilio-Signature", "")
        if not signature or not self.validator.validate(url, params, signature):
            self.refused += 1
            log.warning(
                "refused a webhook to %s: %s signature", request.url.path, "missing" if not signature else "wrong"
            )
            return PlainTextResponse("invalid signature", status_code=403)
        problem = next(
            (f"{' or '.join(names)} missing" for names in required if not any(params.get(name) for name in names)), None
        )
        if problem is None and any("\x00" in k or "\x00" in v for k, v in params.items()):
            problem = "NUL in a parameter"  # Twilio never sends one; PostgreSQL text cannot hold it
        if problem is not None:
            self.refused += 1
            log.warning("refused a signed webhook to %s: %s", request.url.path, problem)
            return PlainTextResponse(f"malformed webhook: {problem}", status_code=400)
        return params

    async def _sid_matches(self, nid: int, params: dict[str, str]) -> bool:
        """The callback names the call or message this notification was sent as (``provider_sid``).

        A signed callback is still only Twilio's word about *some* call of ours: a key
        press from another call (a forwarded or replayed callback URL) must not take
        this alert. Until the outbox has recorded the sid, wait a moment for it.
        """
        named = params.get("CallSid") or params.get("MessageSid") or ""
        deadline = asyncio.get_running_loop().time() + SID_WAIT_S
        while True:
            async with self.pool.connection() as conn:
                cur = await conn.execute("SELECT provider_sid FROM notifications WHERE id = %s", (nid,))
                row = await cur.fetchone()
            if row is None:
                return False  # an unknown notification: nothing to take
            if row[0] is not None or asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(0.1)
        if row[0] == named:
            return True
        self.refused += 1
        log.warning("ignored a signed callback to %s: it names another call or message", f"notification {nid}")
        return False

    async def _first_time(self, key: str) -> bool:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO webhook_receipts (receipt) VALUES (%s) ON CONFLICT DO NOTHING", (key,)
            )
            return cur.rowcount == 1

    async def sms(self, request: Request) -> Response:
        params = await self._verified(request, ("MessageSid",), ("From",))
        if isinstance(params, Response):
            return params
        if not await self._first_time(f"sms:{params.get('MessageSid', '')}"):
            return twiml()
        phone, body = params.get("From", ""), params.get("Body", "")
        match = _REPLY.match(body)
        if not match:
            return twiml("<Message>回复 1 确认处理 / Reply 1 to take the alert</Message>")
        digit, code = match.group(1), match.group(2)
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT n.alert_id, n.recipient_name, n.recipient_key, n.language FROM notifications n "
                "JOIN alerts a USING (alert_id) WHERE n.phone = %s AND n.purpose = 'page' "
                "AND a.state <> 'resolved' AND (%s::text IS NULL OR a.code = upper(%s) "
                "OR a.alert_id::text = %s) ORDER BY a.opened_at DESC, n.id DESC LIMIT 1",
                (phone, code, code, code),
            )
            row = await cur.fetchone()
        if row is None:
            log.info("an SMS reply from %s matched no open alert", redact_phone(phone))
            return twiml("<Message>没有需要确认的告警 / No open alert to take</Message>")
        alert_id, name, key, _ = row
        text = await self._answer(alert_id, name, key, "sms", digit)
        return twiml(f"<Message>{escape(text)}</Message>")

    async def gather(self, request: Request) -> Response:
        params = await self._verified(request, ("CallSid",))
        if isinstance(params, Response):
            return params
        nid = int(request.path_params["notification_id"])
        digits = params.get("Digits", "")
        if not await self._sid_matches(nid, params):
            return twiml()
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT alert_id, recipient_name, recipient_key, language FROM notifications WHERE id = %s", (nid,)
            )
            row = await cur.fetchone()
        if row is None:
            return twiml()
        alert_id, name, key, language = row
        if not await self._first_time(f"gather:{params.get('CallSid', '')}:{digits}"):
            return twiml(render_gather_reply(language, accepted=digits == "1", taken_by_other=None))
        if digits not in ("1", "2", "3"):
            return twiml(render_gather_reply(language, accepted=None, taken_by_other=None))
        await self._mark(nid, "answered")
        await self._answer(alert_id, name, key, "voice", digits)
        taken_by = await self._taken_by(alert_id)
        other = taken_by if taken_by and taken_by != name else None
        return twiml(render_gather_reply(language, accepted=digits == "1" and other is None, taken_by_other=other))

    async def _answer(self, alert_id: int, name: str, key: str, channel: str, digit: str) -> str:
        try:
            if digit == "3":
                alert = await self.engine.on_scene(alert_id, name, channel)
                return f"已记录到达 {alert.code} / On scene at {alert.code}"
            if digit == "1":
                alert = await self.engine.acknowledge(alert_id, name, channel, actor_key=key)
                if alert.acknowledged_by != name:
                    return f"{alert.acknowledged_by} 已在处理 {alert.code} / already taken by {alert.acknowledged_by}"
                return f"已确认，请尽快前往 {alert.code} / You have taken {alert.code}"
            await self.engine.pass_on(alert_id, name, channel, actor_key=key)
            return "已转给下一位 / Passed on"
        except AlertError as error:
            return f"{error}"

    async def _taken_by(self, alert_id: int) -> str | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT acknowledged_by FROM alerts WHERE alert_id = %s", (alert_id,))
            row = await cur.fetchone()
        return row[0] if row else None

    async def _mark(self, nid: int, status: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE notifications SET status = %s, updated_at = %s WHERE id = %s",
                (status, store.ts(self.clock_ms()), nid),
            )

    async def status(self, request: Request) -> Response:
        params = await self._verified(request, ("CallSid", "MessageSid"))
        if isinstance(params, Response):
            return params
        nid = int(request.path_params["notification_id"])
        if not await self._sid_matches(nid, params):
            return PlainTextResponse("")
        call_status = params.get("CallStatus")
        message_status = params.get("MessageStatus")
        now = self.clock_ms()
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT alert_id, status, recipient_name, channel FROM notifications WHERE id = %s FOR UPDATE", (nid,)
            )
            row = await cur.fetchone()
            if row is None:
                return PlainTextResponse("")
            alert_id, current, name, channel = row
            new: str | None = None
            if message_status in ("delivered",):
                new = "delivered"
            elif message_status in DELIVERY_FAILED:
                new = "undelivered"
            elif call_status in NO_ANSWER:
                new = "no_answer"
            elif call_status == "completed" and current not in ("answered",):
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
                    provider_status=call_status or message_status,
                )
        return PlainTextResponse("")


async def _body_within(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it passes ``limit`` (declared or streamed): nothing big is held."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def webhook_app(webhooks: TwilioWebhooks, extra_routes: list[Any] | None = None) -> Starlette:
    return Starlette(routes=[*webhooks.routes(), *(extra_routes or [])])
