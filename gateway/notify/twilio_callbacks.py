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

import logging
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

from gateway.alerting.engine import AlertEngine
from gateway.notify.http_body import body_within
from gateway.notify.responses import REPLY, Paged, Responses
from gateway.notify.templates import render_gather_reply

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024  # Twilio's callbacks are a few KB (an SMS body is at most 1,600 characters)
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
        self.responses = Responses(pool, engine, clock_ms)
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
        raw = await body_within(request, MAX_BODY_BYTES)
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

    async def _paged(self, nid: int, params: dict[str, str]) -> Paged | None:
        """The notification, if the callback names the call or message it was sent as.

        A signed callback is still only Twilio's word about *some* call of ours: a key
        press from another call (a forwarded or replayed callback URL) must not take
        this alert.
        """
        named = params.get("CallSid") or params.get("MessageSid") or ""
        paged = await self.responses.notification(nid, named)
        if paged is None:
            self.refused += 1
        return paged

    async def sms(self, request: Request) -> Response:
        params = await self._verified(request, ("MessageSid",), ("From",))
        if isinstance(params, Response):
            return params
        if not await self.responses.first_time(f"sms:{params.get('MessageSid', '')}"):
            return twiml()
        match = REPLY.match(params.get("Body", ""))
        if not match:
            return twiml("<Message>回复 1 确认处理 / Reply 1 to take the alert</Message>")
        paged = await self.responses.paged_for_reply(params.get("From", ""), match.group(2))
        if paged is None:
            return twiml("<Message>没有需要确认的告警 / No open alert to take</Message>")
        text = await self.responses.answer(paged, "sms", match.group(1))
        return twiml(f"<Message>{escape(text)}</Message>")

    async def gather(self, request: Request) -> Response:
        params = await self._verified(request, ("CallSid",))
        if isinstance(params, Response):
            return params
        digits = params.get("Digits", "")
        paged = await self._paged(int(request.path_params["notification_id"]), params)
        if paged is None:
            return twiml()
        if not await self.responses.first_time(f"gather:{params.get('CallSid', '')}:{digits}"):
            return twiml(render_gather_reply(paged.language, accepted=digits == "1", taken_by_other=None))
        if digits not in ("1", "2", "3"):
            return twiml(render_gather_reply(paged.language, accepted=None, taken_by_other=None))
        await self.responses.mark(paged.notification_id, "answered")
        await self.responses.answer(paged, "voice", digits)
        taken_by = await self.responses.taken_by(paged.alert_id)
        other = taken_by if taken_by and taken_by != paged.name else None
        return twiml(
            render_gather_reply(paged.language, accepted=digits == "1" and other is None, taken_by_other=other)
        )

    async def status(self, request: Request) -> Response:
        params = await self._verified(request, ("CallSid", "MessageSid"))
        if isinstance(params, Response):
            return params
        paged = await self._paged(int(request.path_params["notification_id"]), params)
        if paged is None:
            return PlainTextResponse("")
        call_status = params.get("CallStatus")
        message_status = params.get("MessageStatus")
        new: str | None = None
        if message_status == "delivered":
            new = "delivered"
        elif message_status in DELIVERY_FAILED:
            new = "undelivered"
        elif call_status in NO_ANSWER:
            new = "no_answer"
        await self.responses.settle(
            paged.notification_id, new, call_status or message_status, ended=call_status == "completed"
        )
        return PlainTextResponse("")


def webhook_app(webhooks: TwilioWebhooks, extra_routes: list[Any] | None = None) -> Starlette:
    return Starlette(routes=[*webhooks.routes(), *(extra_routes or [])])
