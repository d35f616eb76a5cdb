"""Playing the people: key presses, SMS replies, hang-ups, redelivered webhooks, signed like Twilio."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Coroutine, Mapping
from typing import Any, Literal
from urllib.parse import urlencode

from aiohttp import ClientError

from gateway.notify.templates import sms_segments
from simulators.providers.twilio.formats import gather_of, new_sid, sign_mode, wall_ms
from simulators.providers.twilio.records import (
    API_VERSION,
    USER_AGENT,
    FakeTwilioError,
    LiveCall,
    T,
    WebhookDelivery,
    WebhookKind,
    log,
)
from simulators.providers.twilio.state import FakeState


class PlaysPeople(FakeState):
    """Playing the people: key presses, SMS replies, hang-ups, redelivered webhooks, signed like Twilio."""

    async def press_key(
        self, call_sid: str, digits: str, *, unsigned: bool = False, bad_signature: bool = False
    ) -> WebhookDelivery:
        """The person on the call presses ``digits``: POST the Gather webhook, return what
        the gateway answered. A genuine press ends the call unless the answer holds another
        ``<Gather>``; a forged one (``unsigned``, ``bad_signature``) changes nothing."""
        return await self._on_loop(self._press_key(call_sid, digits, unsigned, bad_signature))

    async def reply_sms(
        self,
        from_number: str,
        to_number: str,
        body: str,
        webhook_url: str,
        *,
        unsigned: bool = False,
        bad_signature: bool = False,
    ) -> WebhookDelivery:
        """Someone texts ``body`` from ``from_number`` to our number ``to_number``."""
        sid = new_sid("SM")
        params = {
            "MessageSid": sid,
            "SmsSid": sid,
            "SmsMessageSid": sid,
            "AccountSid": self.account_sid,
            "From": from_number,
            "To": to_number,
            "Body": body,
            "NumMedia": "0",
            "NumSegments": str(max(1, sms_segments(body))),
            "SmsStatus": "received",
            "ApiVersion": API_VERSION,
        }
        return await self._on_loop(
            self._webhook("incoming_sms", webhook_url, params, sign=sign_mode(unsigned, bad_signature))
        )

    async def hang_up(self, call_sid: str) -> None:
        """The person hangs up an answered call without pressing anything."""
        await self._on_loop(self._hang_up(call_sid))

    async def redeliver(self, delivery: WebhookDelivery | None = None) -> WebhookDelivery:
        """Send a webhook again exactly as before (the last one by default), as Twilio does
        when it retries: same URL, parameters, signature header and idempotency token."""
        if delivery is None:
            with self._lock:
                if not self._webhooks:
                    raise FakeTwilioError("no webhook has been sent yet")
                delivery = self._webhooks[-1]
        d = delivery
        return await self._on_loop(
            self._send(d.kind, d.url, d.method, d.params, d.signature, d.idempotency_token, redelivery=True)
        )

    def run_blocking(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        """Run one of the async helpers from a thread without a loop (the fake must be
        running in another thread, see ``running_in_thread``)."""
        if threading.current_thread() is self._loop_thread:
            coro.close()
            raise RuntimeError("run_blocking would block the fake's own loop")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    async def _press_key(self, call_sid: str, digits: str, unsigned: bool, bad_signature: bool) -> WebhookDelivery:
        live = self._live_call(call_sid)
        if live.outcome != "answered":
            raise FakeTwilioError(f"call {call_sid} was not answered ({live.outcome})")
        try:
            await asyncio.wait_for(live.answered.wait(), max(5.0, 10 * self.step_s))
        except TimeoutError:
            raise FakeTwilioError(f"call {call_sid} was not answered in time") from None
        if live.ended:
            raise FakeTwilioError(f"call {call_sid} has already ended")
        if not live.gather_action:
            raise FakeTwilioError(f"call {call_sid} has no <Gather action> to press keys for")
        rec = live.record
        params = {
            "AccountSid": self.account_sid,
            "CallSid": call_sid,
            "From": rec.from_,
            "To": rec.to,
            "CallStatus": "in-progress",
            "Direction": "outbound-api",
            "ApiVersion": API_VERSION,
            "Digits": digits,
            "msg": "Gather End",
        }
        forged = unsigned or bad_signature
        delivery = await self._webhook(
            "gather", live.gather_action, params, method=live.gather_method, sign=sign_mode(unsigned, bad_signature)
        )
        if forged:
            return delivery
        following: tuple[str | None, str] = (None, "POST")
        if 200 <= delivery.status < 300 and delivery.body.strip():
            with contextlib.suppress(ET.ParseError):
                following = gather_of(delivery.body, live.gather_action)
        if following[0]:
            live.gather_action, live.gather_method = following
        else:
            live.hangup.set()
        return delivery

    async def _hang_up(self, call_sid: str) -> None:
        self._live_call(call_sid).hangup.set()

    def _live_call(self, call_sid: str) -> LiveCall:
        with self._lock:
            live = self._live.get(call_sid)
        if live is None:
            raise FakeTwilioError(f"no call {call_sid}")
        return live

    async def _webhook(
        self,
        kind: WebhookKind,
        url: str,
        params: Mapping[str, str],
        *,
        method: str = "POST",
        sign: Literal["valid", "missing", "wrong"] = "valid",
    ) -> WebhookDelivery:
        """Sign as Twilio does: HMAC-SHA1 of the full URL followed by the POST parameters
        sorted by name (for GET the parameters are in the URL and nothing is appended)."""
        method = method.upper()
        target = url if method == "POST" else url + ("&" if "?" in url else "?") + urlencode(params)
        signed = dict(params) if method == "POST" else {}
        signature = None
        if sign != "missing":
            signer = self._validator if sign == "valid" else self._forger
            signature = signer.compute_signature(target, signed)
        return await self._send(kind, target, method, params, signature, f"{self.account_sid}-{uuid.uuid4()}")

    async def _send(
        self,
        kind: WebhookKind,
        url: str,
        method: str,
        params: Mapping[str, str],
        signature: str | None,
        token: str,
        *,
        redelivery: bool = False,
    ) -> WebhookDelivery:
        if self._session is None or self._session.closed:
            raise RuntimeError("the fake is not running")
        headers = {
            "User-Agent": USER_AGENT,
            "I-Twilio-Idempotency-Token": token,
            "Accept": "*/*",
            "Cache-Control": "max-age=259200",
        }
        if signature is not None:
            headers["X-Twilio-Signature"] = signature
        data = None
        if method == "POST":
            headers["Content-Type"] = "application/x-www-form-urlencoded; charset=UTF-8"
            data = urlencode(params).encode()
        sent_ms, sent = wall_ms(), time.monotonic()
        status, body, error = 0, "", None
        try:
            async with self._session.request(method, url, data=data, headers=headers) as response:
                status, body = response.status, await response.text()
        except (ClientError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.info("fake Twilio could not deliver a %s webhook: %s", kind, type(exc).__name__)
        delivery = WebhookDelivery(
            kind, url, method, dict(params), signature, token, status, body, error, sent_ms, sent, redelivery
        )
        self._append(self._webhooks, delivery)
        return delivery
