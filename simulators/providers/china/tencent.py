"""A fake of Tencent Cloud's SMS (``SendSms``, 2021-01-11) and voice message (VMS ``SendTtsVoice``, 2020-09-02) APIs.

Follows Tencent Cloud's published references:

* Requests: ``POST /`` with JSON, the action in ``X-TC-Action``, signed with
  ``TC3-HMAC-SHA256`` (cloud.tencent.com/document/api/382/52072: the canonical request
  of method, path, query, ``content-type`` and ``host``, and the payload's SHA-256;
  the key derived from ``"TC3" + SecretKey``, the date, the service and
  ``tc3_request``). A wrong signature is ``AuthFailure.SignatureFailure``, an unknown
  SecretId ``AuthFailure.SecretIdNotFound``, a stale timestamp
  ``AuthFailure.SignatureExpire``: all in ``{"Response": {"Error": {...}}}``.
* Answers: SendSms ``SendStatusSet`` (``Code`` "Ok" or per-number codes such as
  ``InvalidParameterValue.IncorrectPhoneNumber``), SendTtsVoice ``SendStatus.CallId``.
* Receipts (one JSON object per push; document 1128/51535, 1128/51534, 382/3773,
  382/3772): ``voicekey_callback`` (the key), ``voiceprompt_callback`` (result 0
  answered, 1 not answered, 2 failed), SMS status reports (an array, ``report_status``
  SUCCESS or FAIL, ``sid``) and replies (``mobile``, ``nationcode``, ``text``, ``time``).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from typing import Any

from aiohttp import web

from simulators.providers.china.base import CallOutcome, ChinaFake, Sent, new_id

ALGORITHM = "TC3-HMAC-SHA256"
ACTIONS = {"SendSms": "sms", "SendTtsVoice": "voice"}
MAX_SKEW_S = 300
_sequence = itertools.count(1)


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signature(secret: str, date: str, service: str, timestamp: str, content_type: str, host: str, body: bytes) -> str:
    canonical = "\n".join(
        [
            "POST",
            "/",
            "",
            f"content-type:{content_type}\nhost:{host}\n",
            "content-type;host",
            hashlib.sha256(body).hexdigest(),
        ]
    )
    to_sign = "\n".join(
        [ALGORITHM, timestamp, f"{date}/{service}/tc3_request", hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _hmac(_hmac(_hmac(("TC3" + secret).encode(), date), service), "tc3_request")
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def _json(data: Any) -> web.Response:
    """Tencent answers ``Content-Type: application/json`` exactly (its SDK reads errors only then)."""
    return web.Response(
        body=json.dumps(data, ensure_ascii=False).encode(), headers={"Content-Type": "application/json"}
    )


class FakeTencent(ChinaFake):
    provider = "tencent"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/", self._api)

    @staticmethod
    def _error(code: str, message: str) -> web.Response:
        return _json({"Response": {"Error": {"Code": code, "Message": message}, "RequestId": new_id()}})

    async def _api(self, request: web.Request) -> web.Response:
        body = await request.read()
        action = request.headers.get("X-TC-Action", "")
        refused = self._check_signature(request, body)
        if refused is not None:
            return refused
        if action not in ACTIONS:
            return self._error("InvalidAction", f"unknown action {action!r}")
        api = ACTIONS[action]
        params = json.loads(body or b"{}")
        failure = self._failure(api)  # type: ignore[arg-type]
        if failure == "timeout":
            await self._hold()
            return self._error("InternalError", "held")
        if failure in ("error", "busy_provider"):
            self._refuse(action, f"injected {failure}")
            return self._error("InternalError.Timeout" if failure == "error" else "RequestLimitExceeded", "injected")
        if failure == "template":
            self._refuse(action, "injected template")
            return self._error("FailedOperation.TemplateIncorrectOrUnapproved", "模板未审批或内容不匹配")
        if api == "sms":
            return self._sms(params)
        return self._voice(params)

    def _sms(self, params: dict[str, Any]) -> web.Response:
        statuses = []
        for phone in params.get("PhoneNumberSet") or []:
            ok = isinstance(phone, str) and phone.startswith("+") and phone[1:].isdigit()
            sent = Sent(
                "sms",
                phone,
                str(params.get("TemplateId", "")),
                list(params.get("TemplateParamSet") or []),
                str(params.get("SessionContext", "")),
                f"{new_id()[:20]}:{next(_sequence)}",
                sign_name=str(params.get("SignName", "")),
                accepted=ok,
            )
            self._record(sent)
            statuses.append(
                {
                    "SerialNo": sent.sid,
                    "PhoneNumber": phone,
                    "Fee": 1 if ok else 0,
                    "SessionContext": sent.ours,
                    "Code": "Ok" if ok else "InvalidParameterValue.IncorrectPhoneNumber",
                    "Message": "send success" if ok else "手机号格式错误",
                    "IsoCode": "CN",
                }
            )
            if ok:
                self._after_send(sent, phone)
        return _json({"Response": {"SendStatusSet": statuses, "RequestId": new_id()}})

    def _voice(self, params: dict[str, Any]) -> web.Response:
        phone = str(params.get("CalledNumber", ""))
        if not (phone.startswith("+") and phone[1:].isdigit()):
            return self._error("InvalidParameterValue.IncorrectPhoneNumber", "手机号格式错误")
        sent = Sent(
            "voice",
            phone,
            str(params.get("TemplateId", "")),
            list(params.get("TemplateParamSet") or []),
            str(params.get("SessionContext", "")),
            f"{new_id()}-{next(_sequence)}",
            extra={"app": params.get("VoiceSdkAppid"), "play_times": params.get("PlayTimes")},
        )
        self._record(sent)
        self._after_send(sent, phone)
        return _json(
            {"Response": {"SendStatus": {"CallId": sent.sid, "SessionContext": sent.ours}, "RequestId": new_id()}}
        )

    def _check_signature(self, request: web.Request, body: bytes) -> web.Response | None:
        auth = request.headers.get("Authorization", "")
        action = request.headers.get("X-TC-Action", "request")
        if not auth.startswith(ALGORITHM + " "):
            self._refuse(action, "no TC3 authorization")
            return self._error("AuthFailure.SignatureFailure", "The provided credentials could not be validated.")
        parts = dict(p.strip().split("=", 1) for p in auth[len(ALGORITHM) + 1 :].split(",") if "=" in p)
        credential = parts.get("Credential", "").split("/")
        if len(credential) != 4 or credential[0] != self.key_id:
            self._refuse(action, "unknown SecretId")
            return self._error("AuthFailure.SecretIdNotFound", "The SecretId is not found.")
        timestamp = request.headers.get("X-TC-Timestamp", "0")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > MAX_SKEW_S:
            self._refuse(action, "stale timestamp")
            return self._error("AuthFailure.SignatureExpire", "Signature expire.")
        expected = signature(
            self.secret,
            credential[1],
            credential[2],
            timestamp,
            request.headers.get("Content-Type", ""),
            request.headers.get("Host", ""),
            body,
        )
        if not hmac.compare_digest(expected, parts.get("Signature", "")):
            self._refuse(action, "wrong signature")
            return self._error("AuthFailure.SignatureFailure", "The provided credentials could not be validated.")
        return None

    # -- receipts --------------------------------------------------------------------------

    @staticmethod
    def _split(phone: str) -> tuple[str, str]:
        return ("86", phone[3:]) if phone.startswith("+86") else (phone[1:3], phone[3:])

    def _call_receipts(self, sent: Sent, phone: str, outcome: CallOutcome, press: str | None) -> list[tuple[str, Any]]:
        receipts: list[tuple[str, Any]] = []
        if outcome == "answered" and press:
            receipts.append(self._key_receipt(sent, press))
        nation, mobile = self._split(sent.to)
        now = str(int(time.time()))
        receipts.append(
            (
                "voice",
                {
                    "voiceprompt_callback": {
                        "result": {"answered": "0", "no_answer": "1", "busy": "1"}[outcome],
                        "accept_time": now,
                        "call_from": "",
                        "callid": sent.sid,
                        "end_calltime": now,
                        "fee": "1" if outcome == "answered" else "0",
                        "mobile": mobile,
                        "nationcode": nation,
                        "start_calltime": now,
                    }
                },
            )
        )
        return receipts

    def _key_receipt(self, call: Sent, digit: str) -> tuple[str, Any]:
        nation, mobile = self._split(call.to)
        return (
            "voice",
            {
                "voicekey_callback": {
                    "call_from": "",
                    "callid": call.sid,
                    "keypress": digit,
                    "mobile": mobile,
                    "nationcode": nation,
                }
            },
        )

    def _sms_receipt(self, sent: Sent, phone: str, delivered: bool) -> tuple[str, Any]:
        nation, mobile = self._split(sent.to)
        return (
            "sms-status",
            [
                {
                    "user_receive_time": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "nationcode": nation,
                    "mobile": mobile,
                    "report_status": "SUCCESS" if delivered else "FAIL",
                    "errmsg": "DELIVRD" if delivered else "MK:0001",
                    "description": "用户短信送达成功" if delivered else "用户短信未送达",
                    "sid": sent.sid,
                }
            ],
        )

    def _reply_receipt(self, phone: str, text: str) -> tuple[str, Any]:
        nation, mobile = self._split(phone)
        return (
            "sms-reply",
            {
                "extend": "",
                "mobile": mobile,
                "nationcode": nation,
                "sign": "",
                "text": text,
                "time": int(time.time() * 1000) + next(_sequence),
            },
        )
