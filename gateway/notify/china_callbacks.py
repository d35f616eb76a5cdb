"""Aliyun's and Tencent's receipts: key presses, SMS replies, delivery and call outcomes.

Neither provider signs its HTTP pushes, so each is authenticated twice over: by a
secret token in the URL the operator registers with the provider (compared in constant
time; wrong or missing: 403), and by the documented fields, which must name a call or
message the outbox sent through that provider (its id as recorded, and for Aliyun our
notification id echoed as ``out_id``). A push that is not the documented JSON is 400.
Providers retry (Aliyun after 1, 5 and 10 minutes), so every effect is keyed and
applied once (``gateway.notify.responses``).

Aliyun (HTTP batch push, a JSON array per request, answered ``{"code": 0}``):

* ``/aliyun/{token}/voice-call-report``: VoiceCallReport, the pressed key (``dtmf``).
* ``/aliyun/{token}/voice-report``: VoiceReport, the call's end (``status_code``:
  200000/200001 answered, anything else no answer).
* ``/aliyun/{token}/sms-report``: SmsReport, delivered or not (``success``).
* ``/aliyun/{token}/sms-up``: SmsUp, a reply ("1", "1 A17"); it carries no id of the
  message it answers, so it is matched by the alert code, the phone and the time.

Tencent (one JSON object per request, answered ``{"result": 0, "errmsg": "OK"}``):

* ``/tencent/{token}/voice``: ``voicekey_callback`` (the key) or
  ``voiceprompt_callback`` (result 0 answered, 1 not answered, 2 failed).
* ``/tencent/{token}/sms-status``: the delivery reports (an array, ``report_status``).
* ``/tencent/{token}/sms-reply``: a reply, matched as Aliyun's is.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from gateway.notify.http_body import body_within
from gateway.notify.responses import REPLY, Paged, Responses

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024  # a batch push holds up to some hundreds of receipts
ALIYUN_OK = {"code": 0, "msg": "接收成功"}
TENCENT_OK = {"result": 0, "errmsg": "OK"}
ALIYUN_ANSWERED = frozenset({"200000", "200001"})  # listened to the end / hung up early
ALIYUN_KEY_PRESSED = "300000"

Handler = Callable[[Any], Awaitable[None]]


class Refused(Exception):
    """A push that is not what the provider documents: 400 with this message."""


class ChinaCallbacks:
    def __init__(self, responses: Responses, tokens: Mapping[str, str]) -> None:
        """``tokens``: provider name (aliyun, tencent) -> the secret in its callback URLs."""
        self.responses = responses
        self.tokens = dict(tokens)
        self.refused = 0

    def routes(self) -> list[Route]:
        handlers: dict[str, dict[str, tuple[Handler, dict[str, Any]]]] = {
            "aliyun": {
                "voice-call-report": (self._each(self._aliyun_key), ALIYUN_OK),
                "voice-report": (self._each(self._aliyun_call_end), ALIYUN_OK),
                "sms-report": (self._each(self._aliyun_delivery), ALIYUN_OK),
                "sms-up": (self._each(self._aliyun_reply), ALIYUN_OK),
            },
            "tencent": {
                "voice": (self._tencent_voice, TENCENT_OK),
                "sms-status": (self._each(self._tencent_delivery), TENCENT_OK),
                "sms-reply": (self._tencent_reply, TENCENT_OK),
            },
        }
        routes = []
        for provider, kinds in handlers.items():
            if provider not in self.tokens:
                continue
            for kind, (handler, ok) in kinds.items():
                routes.append(
                    Route(f"/{provider}/{{token}}/{kind}", self._endpoint(provider, handler, ok), methods=["POST"])
                )
        return routes

    def _endpoint(
        self, provider: str, handler: Handler, ok: dict[str, Any]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            given = str(request.path_params.get("token", ""))
            if not hmac.compare_digest(given.encode(), self.tokens[provider].encode()):
                self.refused += 1
                log.warning("refused a %s callback to %s: wrong token", provider, request.url.path.rsplit("/", 1)[-1])
                return PlainTextResponse("forbidden", status_code=403)
            raw = await body_within(request, MAX_BODY_BYTES)
            if raw is None:
                self.refused += 1
                return PlainTextResponse("request body too large", status_code=413, headers={"Connection": "close"})
            try:
                body = json.loads(raw.decode("utf-8"))
                if "\x00" in raw.decode("utf-8"):
                    raise Refused("NUL in the push")
                await handler(body)
            except (ValueError, Refused) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                self.refused += 1
                log.warning("refused a %s callback: %s", provider, error)
                return PlainTextResponse(f"malformed callback: {error}", status_code=400)
            return JSONResponse(ok)

        return endpoint

    @staticmethod
    def _each(handler: Callable[[Mapping[str, Any]], Awaitable[None]]) -> Handler:
        """A batch push: a JSON array of receipts. A malformed one refuses the push (400) where it
        stands; what came before it was applied and, keyed, is not applied again on a retry."""

        async def every(body: Any) -> None:
            if not isinstance(body, list) or not all(isinstance(item, dict) for item in body):
                raise Refused("expected a JSON array of objects")
            for item in body:
                await handler(item)

        return every

    async def _paged(self, nid_text: Any, provider_sid: str, provider: str) -> Paged | None:
        if not isinstance(nid_text, str) or not nid_text.isdigit() or len(nid_text) > 18:
            self.responses.ignored += 1
            log.warning("ignored a %s receipt: out_id %r is none of ours", provider, nid_text)
            return None
        return await self.responses.notification(int(nid_text), provider_sid, provider)

    # Aliyun

    async def _aliyun_key(self, item: Mapping[str, Any]) -> None:
        call_id = _text(item, "call_id")
        digits = str(item.get("dtmf") or "")
        if str(item.get("status_code", "")) != ALIYUN_KEY_PRESSED or not digits:
            return  # a progress report without a key
        paged = await self._paged(item.get("out_id"), call_id, "aliyun")
        if paged is not None:
            await self._pressed(paged, f"aliyun:key:{call_id}", digits[0])

    async def _aliyun_call_end(self, item: Mapping[str, Any]) -> None:
        call_id = _text(item, "call_id")
        status = _text(item, "status_code")
        paged = await self._paged(item.get("out_id"), call_id, "aliyun")
        if paged is None:
            return
        if item.get("dtmf"):  # the record repeats the key; applied once with the call report's
            await self._pressed(paged, f"aliyun:key:{call_id}", str(item["dtmf"])[0])
        if await self.responses.first_time(f"aliyun:end:{call_id}"):
            answered = status in ALIYUN_ANSWERED
            await self.responses.settle(
                paged.notification_id, None if answered else "no_answer", status, ended=answered
            )

    async def _aliyun_delivery(self, item: Mapping[str, Any]) -> None:
        biz_id = _text(item, "biz_id")
        success = item.get("success")
        if not isinstance(success, bool):
            raise Refused("success: expected true or false")
        paged = await self._paged(item.get("out_id"), biz_id, "aliyun")
        if paged is not None and await self.responses.first_time(f"aliyun:sms:{biz_id}"):
            code = str(item.get("err_code") or "")
            await self.responses.settle(paged.notification_id, "delivered" if success else "undelivered", code)

    async def _aliyun_reply(self, item: Mapping[str, Any]) -> None:
        phone = _text(item, "phone_number")
        sequence = str(item.get("sequence_id") or "")
        if not sequence:
            raise Refused("sequence_id missing")
        if await self.responses.first_time(f"aliyun:up:{sequence}"):
            await self._replied(_e164(phone, "86"), _text(item, "content"))

    # Tencent

    async def _tencent_voice(self, body: Any) -> None:
        if not isinstance(body, dict):
            raise Refused("expected a JSON object")
        if isinstance(body.get("voicekey_callback"), dict):
            item = body["voicekey_callback"]
            call_id, key = _text(item, "callid"), _text(item, "keypress")
            paged = await self._tencent_call(call_id, item)
            if paged is not None and key:
                await self._pressed(paged, f"tencent:key:{call_id}", key[0])
        elif isinstance(body.get("voiceprompt_callback"), dict):
            item = body["voiceprompt_callback"]
            call_id, result = _text(item, "callid"), _text(item, "result")
            paged = await self._tencent_call(call_id, item)
            if paged is not None and await self.responses.first_time(f"tencent:end:{call_id}"):
                answered = result == "0"
                await self.responses.settle(
                    paged.notification_id, None if answered else "no_answer", f"result {result}", ended=answered
                )
        elif not isinstance(body.get("voicefailure_callback"), dict):
            raise Refused("expected voicekey_callback, voiceprompt_callback or voicefailure_callback")

    async def _tencent_call(self, call_id: str, item: Mapping[str, Any]) -> Paged | None:
        paged = await self.responses.by_provider_sid("tencent", call_id)
        if paged is not None and not self._same_phone(paged, _tencent_phone(item)):
            return None
        return paged

    async def _tencent_delivery(self, item: Mapping[str, Any]) -> None:
        sid = _text(item, "sid")
        status = _text(item, "report_status")
        paged = await self.responses.by_provider_sid("tencent", sid)
        if paged is None or not self._same_phone(paged, _tencent_phone(item)):
            return
        if await self.responses.first_time(f"tencent:sms:{sid}"):
            await self.responses.settle(
                paged.notification_id, "delivered" if status == "SUCCESS" else "undelivered", status
            )

    async def _tencent_reply(self, body: Any) -> None:
        if not isinstance(body, dict):
            raise Refused("expected a JSON object")
        phone = _tencent_phone(body)
        text = _text(body, "text")
        when = str(body.get("time") or "")
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        if await self.responses.first_time(f"tencent:up:{phone}:{when}:{digest}"):
            await self._replied(phone, text)

    # shared

    async def _pressed(self, paged: Paged, key: str, digit: str) -> None:
        if digit not in ("1", "2", "3") or not await self.responses.first_time(f"{key}:{digit}"):
            return
        await self.responses.mark(paged.notification_id, "answered")
        await self.responses.answer(paged, "voice", digit)

    async def _replied(self, phone: str, text: str) -> None:
        match = REPLY.match(text)
        if not match:
            log.info("an SMS reply that is no answer (not 1, 2 or 3)")
            return
        paged = await self.responses.paged_for_reply(phone, match.group(2))
        if paged is not None:
            await self.responses.answer(paged, "sms", match.group(1))

    def _same_phone(self, paged: Paged, phone: str) -> bool:
        if paged.phone != phone:
            self.responses.ignored += 1
            log.warning("ignored a tencent receipt: not the number notification %d went to", paged.notification_id)
            return False
        return True


def _text(item: Mapping[str, Any], name: str) -> str:
    value = item.get(name)
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value or len(value) > 1000:
        raise Refused(f"{name}: missing or not text")
    return value


def _e164(number: str, country: str) -> str:
    digits = number.lstrip("+")
    if not digits.isdigit():
        raise Refused("the phone number is not digits")
    return "+" + (digits if digits.startswith(country) and len(digits) > 11 else country + digits)


def _tencent_phone(item: Mapping[str, Any]) -> str:
    return _e164(_text(item, "mobile"), str(item.get("nationcode") or "86"))
