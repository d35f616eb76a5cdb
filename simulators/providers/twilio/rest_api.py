"""The Messages and Calls REST endpoints, as Twilio answers them."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.notify.templates import sms_segments
from simulators.providers.twilio.formats import (
    call_problem,
    form_field,
    gather_of,
    message_problem,
    new_sid,
    rfc2822,
    twilio_error,
    wall_ms,
)
from simulators.providers.twilio.records import API_VERSION, REFUSALS, Api, LiveCall, PlacedCall, SentMessage, log
from simulators.providers.twilio.state import FakeState


class RestApi(FakeState):
    """The Messages and Calls REST endpoints, as Twilio answers them."""

    async def _messages_api(self, request: web.Request) -> web.StreamResponse:
        arrived_ms, arrived = wall_ms(), time.monotonic()
        form = await request.post()
        to, from_, body = form_field(form, "To"), form_field(form, "From"), form_field(form, "Body")
        service = form_field(form, "MessagingServiceSid") or None
        callback = form_field(form, "StatusCallback") or None

        def record(outcome: str, status: int, code: int | None = None, sid: str | None = None) -> SentMessage:
            entry = SentMessage(sid, to, from_, body, callback, service, arrived_ms, arrived, outcome, status, code)
            self._append(self._messages, entry)
            return entry

        refusal = await self._gate(request, "messages", to, record)
        if refusal is not None:
            return refusal
        problem = message_problem(to, from_, body, service, callback)
        if problem is not None:
            record("bad_request", 400, problem[0])
            return twilio_error(400, *problem)
        sid = new_sid("SM")
        entry = record("queued", 201, sid=sid)
        self._set_status(sid, "queued")
        log.info("fake Twilio accepted message %s", sid)
        log.debug("message %s from %s to %s: %r", sid, from_, to, body)
        self._spawn(self._run_message(entry), f"fake-twilio-{sid}")
        return web.json_response(
            self._resource(
                sid,
                "Messages",
                {
                    "body": body,
                    "date_sent": None,
                    "error_code": None,
                    "error_message": None,
                    "from": from_ or None,
                    "messaging_service_sid": service,
                    "num_media": "0",
                    "num_segments": str(sms_segments(body)),
                    "to": to,
                    "subresource_uris": {"media": f"{self._path('Messages', sid)}/Media.json"},
                },
            ),
            status=201,
        )

    async def _calls_api(self, request: web.Request) -> web.StreamResponse:
        arrived_ms, arrived = wall_ms(), time.monotonic()
        form = await request.post()
        to, from_ = form_field(form, "To"), form_field(form, "From")
        twiml, url = form_field(form, "Twiml") or None, form_field(form, "Url") or None
        callback = form_field(form, "StatusCallback") or None
        events = tuple(str(e) for e in form.getall("StatusCallbackEvent", []))
        gather: tuple[str | None, str] = (None, "POST")
        with contextlib.suppress(ET.ParseError):
            gather = gather_of(twiml, url) if twiml else (None, "POST")

        def record(outcome: str, status: int, code: int | None = None, sid: str | None = None) -> PlacedCall:
            entry = PlacedCall(
                sid, to, from_, twiml, url, callback, events, gather[0], arrived_ms, arrived, outcome, status, code
            )
            self._append(self._calls, entry)
            return entry

        refusal = await self._gate(request, "calls", to, record)
        if refusal is not None:
            return refusal
        problem = call_problem(to, from_, twiml, url, callback)
        if problem is not None:
            record("bad_request", 400, problem[0])
            return twilio_error(400, *problem)
        sid = new_sid("CA")
        entry = record("queued", 201, sid=sid)
        with self._lock:
            outcome, press = self._answers.get(to, ("answered", None))
            live = LiveCall(entry, outcome, press, gather[0], gather[1])
            self._live[sid] = live
        self._set_status(sid, "queued")
        log.info("fake Twilio accepted call %s", sid)
        log.debug("call %s from %s to %s will be %s", sid, from_, to, outcome)
        self._spawn(self._run_call(live), f"fake-twilio-{sid}")
        return web.json_response(
            self._resource(
                sid,
                "Calls",
                {
                    "annotation": None,
                    "answered_by": None,
                    "caller_name": None,
                    "duration": None,
                    "end_time": None,
                    "forwarded_from": None,
                    "from": from_,
                    "from_formatted": from_,
                    "group_sid": None,
                    "parent_call_sid": None,
                    "phone_number_sid": None,
                    "queue_time": "0",
                    "start_time": None,
                    "to": to,
                    "to_formatted": to,
                    "trunk_sid": None,
                    "subresource_uris": {},
                },
            ),
            status=201,
        )

    def _resource(self, sid: str, collection: str, fields: dict[str, Any]) -> dict[str, Any]:
        """The JSON of a new resource, as ``MessageInstance`` / ``CallInstance`` read it."""
        now = rfc2822()
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "date_created": now,
            "date_updated": now,
            "direction": "outbound-api",
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued",
            "uri": f"{self._path(collection, sid)}.json",
            **fields,
        }

    def _path(self, collection: str, sid: str) -> str:
        return f"/{API_VERSION}/Accounts/{self.account_sid}/{collection}/{sid}"

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        return twilio_error(404, 20404, f"The requested resource {request.path} was not found")

    async def _gate(
        self, request: web.Request, api: Api, to: str, record: Callable[[str, int, int | None], object]
    ) -> web.StreamResponse | None:
        """Authentication, then any injected failure: the answer that refuses the request."""
        if not self._authorised(request):
            record("auth_failed", 401, 20003)
            log.info("fake Twilio refused a request: bad credentials")
            return twilio_error(401, 20003, "Authenticate", {"WWW-Authenticate": 'Basic realm="Twilio API"'})
        mode = self._take_failure(api, to)
        if mode is None:
            return None
        log.info("fake Twilio injects %s into a %s request", mode, api)
        if mode == "timeout":  # hold the request open longer than any client waits
            record("timeout", 0, None)
            assert self._stopping is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.hold_s)
            status, code, message = REFUSALS["http500"]  # for a client still listening
            return twilio_error(status, code, message)
        status, code, message = REFUSALS[mode]
        record(mode, status, code)
        return twilio_error(status, code, message.format(to=to))

    def _authorised(self, request: web.Request) -> bool:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).decode("latin-1").partition(":")
        except (binascii.Error, ValueError):
            return False
        return (
            bool(sep)
            and hmac.compare_digest(user.encode(), self.account_sid.encode())
            and hmac.compare_digest(password.encode("latin-1"), self._token)
            and request.match_info.get("account") == self.account_sid
        )
