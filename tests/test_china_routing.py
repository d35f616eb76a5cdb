"""Who carries a message, and what goes into a China provider's template: no servers needed but the fakes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import msgspec

from gateway.config import AliyunConfig
from gateway.notify.aliyun import AliyunSms, domestic_number
from gateway.notify.base import Outbound
from gateway.notify.routing import route
from gateway.notify.template_fields import fields
from gateway.notify.templates import MessageContext
from simulators.providers.china.aliyun import FakeAliyun


@dataclass
class Named:
    name: str
    channels: frozenset[str]

    async def send(self, message: Outbound) -> None: ...

    async def close(self) -> None: ...


SMS, BOTH = frozenset({"sms"}), frozenset({"sms", "voice"})
NOTIFIERS = [Named("console", BOTH), Named("twilio", SMS), Named("tencent", SMS), Named("aliyun", SMS)]


def names(
    phone: str, preferred: str | None = None, order: tuple[str, ...] = ("aliyun", "tencent", "twilio")
) -> list[str]:
    return [n.name for n in route(NOTIFIERS, "sms", phone, preferred, order)]  # type: ignore[arg-type]


def test_86_numbers_go_to_china_first_in_the_configured_order_and_abroad_to_twilio() -> None:
    assert names("+8613800000001") == ["aliyun", "tencent", "twilio", "console"]
    assert names("+8613800000001", order=("tencent", "twilio", "aliyun")) == ["tencent", "twilio", "aliyun", "console"]
    assert names("+14155550100") == ["twilio", "console"]  # domestic templates do not reach abroad
    assert names("+8613800000001", preferred="twilio") == ["twilio", "aliyun", "tencent", "console"]
    assert names("+14155550100", preferred="aliyun") == ["twilio", "console"]


def test_landlines_take_their_area_codes_zero() -> None:
    assert domestic_number("+8613800000001") == "13800000001"
    assert domestic_number("+862100000001") == "02100000001"


def test_several_alerts_for_one_phone_go_as_the_summary_template() -> None:
    contexts = [
        MessageContext("王秀英", "fall", "warning", 1_764_000_000_000, "A3"),
        MessageContext("李建国", "sos", "critical", 1_764_000_060_000, "A4"),
    ]
    values = fields(contexts)
    assert values["count"] == "2" and values["codes"] == "A4、A3" and values["elder"] == "李建国"
    assert values["taken_by"] == "-"  # an empty parameter is refused by both providers

    async def main() -> list[tuple[str, object]]:
        fake = FakeAliyun("k", "s")
        await fake.start()
        try:
            config = msgspec.convert(
                {
                    "access_key_id": "k",
                    "sign_name": "幸福社区",
                    "endpoint": fake.endpoint,
                    "protocol": "http",
                    "sms_templates": {
                        p: {"template": f"SMS_{p}", "params": {"n": "count", "c": "codes"}}
                        for p in ("page", "taken", "retraction", "resolved", "summary")
                    },
                },
                AliyunConfig,
            )
            message = Outbound(7, 1, "page", "sms", "+8613800000001", "zh", "王强", "", summary=True, fields=values)
            await AliyunSms(config, "s").send(message)
            return [(s.template, s.params) for s in fake.sent]
        finally:
            await fake.stop()

    assert asyncio.run(main()) == [("SMS_summary", {"n": "2", "c": "A4、A3"})]
