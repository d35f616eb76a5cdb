"""The demo's providers: +86 numbers through the fake Aliyun (templates, an IVR call), the rest through the fake Twilio.

Aliyun sends registered templates, not text; the demo registers its own (``TEMPLATES``,
worded as a real deployment might) and shows each message as the phone would: the
template's wording with the parameters filled in, and which provider carried it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from gateway.notify.base import redact_phone
from simulators.providers.china.aliyun import FakeAliyun
from simulators.providers.twilio.server import FakeTwilio

ALIYUN_KEY, ALIYUN_SECRET = "LTAI-demo-key", "demo-aliyun-secret"
ALIYUN_TOKEN = "demo-callback-token-0123456789"
SIGN = "幸福社区"
_ALERT = {"name": "elder", "what": "kind", "code": "code"}
# template code -> (what it says, its parameters -> the gateway's fields)
TEMPLATES: dict[str, tuple[str, dict[str, str]]] = {
    "SMS_900001": (
        "【${sign}】${name} ${what}（${code}），${time}，${address}。请接听来电并按 1 确认，或回复 1 ${code}。",
        {**_ALERT, "time": "time", "address": "address"},
    ),
    "SMS_900002": (
        "【${sign}】${who} 已接手 ${name} 的${what}（${code}），您无需再处理。",
        {**_ALERT, "who": "taken_by"},
    ),
    "SMS_900003": ("【${sign}】已取消：${name} 的${what}（${code}）为误报或已撤销。", _ALERT),
    "SMS_900004": ("【${sign}】已解决：${name} 的${what}（${code}），${how}。", {**_ALERT, "how": "outcome"}),
    "SMS_900005": (
        "【${sign}】您有 ${count} 条未处理告警：${codes}。回复 1 加编号确认。",
        {"count": "count", "codes": "codes"},
    ),
    "TTS_900101": (
        "您好，这里是幸福社区养老服务。${name} ${what}，编号 ${code}。确认处理请按 1，转给下一位请按 2。",
        _ALERT,
    ),
    "TTS_900102": ("已确认，请尽快前往。", {}),
    "TTS_900103": ("已转给下一位，谢谢。", {}),
}
SMS_FOR = {
    "page": "SMS_900001",
    "taken": "SMS_900002",
    "retraction": "SMS_900003",
    "resolved": "SMS_900004",
    "summary": "SMS_900005",
}
VOICE_FOR = {"page": "TTS_900101", "key1": "TTS_900102", "key2": "TTS_900103"}


def aliyun_config(endpoint: str) -> dict[str, Any]:
    """The gateway's ``notify.aliyun`` section for the demo's fake."""

    def entry(code: str) -> dict[str, Any]:
        return {"template": code, "params": TEMPLATES[code][1]}

    return {
        "access_key_id": ALIYUN_KEY,
        "access_key_secret": ALIYUN_SECRET,
        "callback_token": ALIYUN_TOKEN,
        "sign_name": SIGN,
        "endpoint": endpoint,
        "protocol": "http",
        "called_show_number": "02100000000",
        "sms_templates": {purpose: entry(code) for purpose, code in SMS_FOR.items()},
        "voice_templates": {purpose: entry(code) for purpose, code in VOICE_FOR.items()},
    }


def preview(template: str, params: dict[str, str]) -> str:
    """What the phone shows or the call says: the registered wording, filled in."""
    text = TEMPLATES.get(template, (template, {}))[0]
    return re.sub(r"\$\{(\w+)\}", lambda m: SIGN if m.group(1) == "sign" else str(params.get(m.group(1), "")), text)


@dataclass
class DemoProviders:
    twilio: FakeTwilio
    aliyun: FakeAliyun
    shown_twilio_sms: int = 0
    shown_twilio_calls: int = 0
    shown_aliyun: int = 0
    people: dict[str, str] = field(default_factory=dict)

    def new_lines(self) -> Iterator[str]:
        """What reached a phone since the last call, a line each, with the provider that carried it."""
        for m in self.twilio.messages[self.shown_twilio_sms :]:
            if m.accepted:
                yield f"SMS  → {self._who(m.to)} [twilio]: {m.body}"
        self.shown_twilio_sms = len(self.twilio.messages)
        for c in self.twilio.calls[self.shown_twilio_calls :]:
            if c.accepted:
                yield f"CALL → {self._who(c.to)} [twilio]: reads the alert, asks to press 1 or 2"
        self.shown_twilio_calls = len(self.twilio.calls)
        sent = self.aliyun.sent[self.shown_aliyun :]
        self.shown_aliyun += len(sent)
        for s in sent:
            if s.accepted:
                kind = "SMS " if s.api == "sms" else "CALL"
                who = self._who("+86" + s.to.removeprefix("0"))
                yield f"{kind} → {who} [aliyun {s.template}]: {preview(s.template, s.params)}"

    def _who(self, phone: str) -> str:
        return f"{self.people.get(phone, '?')} ({redact_phone(phone)})"
