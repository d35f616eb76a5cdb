"""A fake of Aliyun's SMS (dysmsapi 2017-05-25 ``SendSms``) and voice (dyvmsapi 2017-05-25 ``IvrCall``) APIs.

Follows Aliyun's published references:

* Requests: RPC style, ``POST /`` with the action in ``x-acs-action`` and the
  parameters in the query, signed with the V3 signature (``ACS3-HMAC-SHA256``: the
  canonical request of method, path, sorted query, the signed headers and the payload's
  SHA-256, hashed and HMAC'd with the AccessKey secret; help.aliyun.com "V3 版本请求体&
  签名机制"). A wrong signature is 400 ``SignatureDoesNotMatch``, an unknown key 404
  ``InvalidAccessKeyId.NotFound``.
* Answers: ``{"Code": "OK", "Message": "OK", "BizId"|"CallId": ..., "RequestId": ...}``;
  a refusal is HTTP 200 with another ``Code`` (``isv.MOBILE_NUMBER_ILLEGAL``,
  ``isv.SMS_TEMPLATE_ILLEGAL``, ``isp.SYSTEM_ERROR``), Aliyun's own trouble 500.
* Receipts (HTTP batch push, JSON arrays; help.aliyun.com SmsReport, SmsUp,
  VoiceCallReport, VoiceReport): a call's key as VoiceCallReport ``status_code``
  300000 with ``dtmf``, its end as VoiceReport (200000 listened, 200002 busy, 200003 not
  answered); an SMS's delivery as SmsReport (``success``, ``biz_id``, ``out_id``); a
  reply as SmsUp (``phone_number`` without +86, ``content``, ``sequence_id``).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from typing import Any
from urllib.parse import quote

from aiohttp import web

from simulators.providers.china.base import CallOutcome, ChinaFake, Sent, new_id

ALGORITHM = "ACS3-HMAC-SHA256"
ACTIONS = {"SendSms": "sms", "IvrCall": "voice"}
_sequence = itertools.count(1)


def _canonical_query(query: dict[str, str]) -> str:
    return "&".join(f"{k}={quote(query[k], safe='~')}" for k in sorted(query))


def signature(
    method: str,
    path: str,
    query: dict[str, str],
    headers: dict[str, str],
    signed: list[str],
    payload_hash: str,
    secret: str,
) -> str:
    canonical_headers = "".join(f"{name}:{headers.get(name, '').strip()}\n" for name in signed)
    canonical = "\n".join(
        [method, path or "/", _canonical_query(query), canonical_headers, ";".join(signed), payload_hash]
    )
    to_sign = f"{ALGORITHM}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    return hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


class FakeAliyun(ChinaFake):
    provider = "aliyun"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/", self._api)

    def _error(self, status: int, code: str, message: str) -> web.Response:
        return web.json_response({"Code": code, "Message": message, "RequestId": new_id()}, status=status)

    async def _api(self, request: web.Request) -> web.Response:
        body = await request.read()
        action = request.headers.get("x-acs-action", "")
        refused = self._check_signature(request, body)
        if refused is not None:
            self._refuse(action or "request", refused.text or "")
            return refused
        if action not in ACTIONS:
            return self._error(400, "InvalidAction.NotFound", f"unknown action {action!r}")
        api = ACTIONS[action]
        query = dict(request.query)
        failure = self._failure(api)  # type: ignore[arg-type]
        if failure == "timeout":
            await self._hold()
            return self._error(503, "ServiceUnavailable", "held")
        if failure == "error":
            self._refuse(action, "injected 500")
            return self._error(500, "InternalError", "The request processing has failed due to some unknown error.")
        if failure == "busy_provider":
            self._refuse(action, "injected isp.SYSTEM_ERROR")
            return web.json_response({"Code": "isp.SYSTEM_ERROR", "Message": "系统异常", "RequestId": new_id()})
        if failure == "template":
            self._refuse(action, "injected isv.SMS_TEMPLATE_ILLEGAL")
            return web.json_response(
                {"Code": "isv.SMS_TEMPLATE_ILLEGAL", "Message": "模板不合法", "RequestId": new_id()}
            )
        number = query.get("PhoneNumbers" if api == "sms" else "CalledNumber", "")
        mobile = number.isdigit() and len(number) == 11 and number.startswith("1")
        landline = number.isdigit() and 10 <= len(number) <= 12 and number.startswith("0") and api == "voice"
        if not (mobile or landline):
            self._refuse(action, "isv.MOBILE_NUMBER_ILLEGAL")
            return web.json_response(
                {"Code": "isv.MOBILE_NUMBER_ILLEGAL", "Message": "非法手机号", "RequestId": new_id()}
            )
        if api == "sms":
            sent = Sent(
                "sms",
                number,
                query.get("TemplateCode", ""),
                json.loads(query.get("TemplateParam") or "{}"),
                query.get("OutId", ""),
                f"{int(time.time() * 1000)}{next(_sequence):06d}^0",
                sign_name=query.get("SignName", ""),
            )
            answer = {"Code": "OK", "Message": "OK", "BizId": sent.sid, "RequestId": new_id()}
        else:
            menu = {k: v for k, v in query.items() if k.startswith("MenuKeyMap.")}
            sent = Sent(
                "voice",
                number,
                query.get("StartCode", ""),
                json.loads(query.get("StartTtsParams") or "{}"),
                query.get("OutId", ""),
                f"{next(_sequence)}^{new_id()[:12]}",
                extra={"menu": menu, "show": query.get("CalledShowNumber", "")},
            )
            answer = {"Code": "OK", "Message": "OK", "CallId": sent.sid, "RequestId": new_id()}
        self._record(sent)
        self._after_send(sent, "+86" + number.removeprefix("0"))
        return web.json_response(answer)

    def _check_signature(self, request: web.Request, body: bytes) -> web.Response | None:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith(ALGORITHM + " "):
            return self._error(400, "MissingAuthorization", "Authorization is mandatory for this action.")
        parts = dict(p.split("=", 1) for p in auth[len(ALGORITHM) + 1 :].split(",") if "=" in p)
        if parts.get("Credential") != self.key_id:
            return self._error(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        payload_hash = hashlib.sha256(body).hexdigest()
        if request.headers.get("x-acs-content-sha256") != payload_hash:
            return self._error(400, "SignatureDoesNotMatch", "the payload hash does not match")
        signed = parts.get("SignedHeaders", "").split(";")
        headers = {k.lower(): v for k, v in request.headers.items()}
        expected = signature(
            request.method, request.path, dict(request.query), headers, signed, payload_hash, self.secret
        )
        if not hmac.compare_digest(expected, parts.get("Signature", "")):
            return self._error(400, "SignatureDoesNotMatch", "Specified signature is not matched with our calculation.")
        return None

    # -- receipts --------------------------------------------------------------------------

    def _call_receipts(self, sent: Sent, phone: str, outcome: CallOutcome, press: str | None) -> list[tuple[str, Any]]:
        receipts: list[tuple[str, Any]] = []
        if outcome == "answered" and press:
            receipts.append(self._key_receipt(sent, press))
        status = {"answered": "200000", "busy": "200002", "no_answer": "200003"}[outcome]
        receipts.append(
            (
                "voice-report",
                [
                    {
                        "call_id": sent.sid,
                        "start_time": _now(),
                        "end_time": _now(),
                        "duration": "12" if outcome == "answered" else "0",
                        "status_code": status,
                        "status_msg": {"200000": "用户听完语音", "200002": "用户占线", "200003": "用户未接听"}[status],
                        "out_id": sent.ours,
                        "toll_type": "LOCAL",
                        "hangup_direction": "1",
                    }
                ],
            )
        )
        return receipts

    def _key_receipt(self, call: Sent, digit: str) -> tuple[str, Any]:
        return (
            "voice-call-report",
            [
                {
                    "call_id": call.sid,
                    "status_code": "300000",
                    "smart_status_code": "ANSWERED",
                    "dtmf": digit,
                    "status_time": _now(),
                    "out_id": call.ours,
                }
            ],
        )

    def _sms_receipt(self, sent: Sent, phone: str, delivered: bool) -> tuple[str, Any]:
        return (
            "sms-report",
            [
                {
                    "phone_number": sent.to,
                    "send_time": _now(),
                    "report_time": _now(),
                    "success": delivered,
                    "err_code": "DELIVERED" if delivered else "MK:0001",
                    "err_msg": "用户接收成功" if delivered else "失败",
                    "sms_size": "1",
                    "biz_id": sent.sid,
                    "out_id": sent.ours,
                }
            ],
        )

    def _reply_receipt(self, phone: str, text: str) -> tuple[str, Any]:
        return (
            "sms-up",
            [
                {
                    "phone_number": phone.removeprefix("+86"),
                    "send_time": _now(),
                    "content": text,
                    "sign_name": "",
                    "dest_code": "1234",
                    "sequence_id": next(_sequence),
                }
            ],
        )
