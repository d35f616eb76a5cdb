"""+86 numbers paged through Aliyun and Tencent Cloud (their real SDKs, local fakes), Twilio the fallback.

From an SOS over MQTT to the provider's SMS and interactive call, the key press pushed
back as the provider's receipt, the alert taken and "help is coming" on the band; a
China provider that fails entirely, forged and repeated receipts, a template missing
from the configuration.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.config import ConfigError, load_config
from simulators.providers.china.aliyun import FakeAliyun
from simulators.providers.china.base import ChinaFake
from simulators.providers.china.tencent import FakeTencent
from simulators.providers.twilio.server import FakeTwilio, running_in_thread
from simulators.services.mosquitto import LocalMosquitto
from simulators.services.process import free_port
from tests.support import CommandListener, GatewayRunner, Publisher, query, wait_until

SID, TWILIO_TOKEN = "AC" + "0" * 32, "test-auth-token-not-secret"
KEY_ID, SECRET, CALLBACK_TOKEN = "LTAI-test-key", "test-secret-not-secret", "cb-token-0123456789abcdef"
SON, GRID, ABROAD = "+8613800000001", "+8613900000001", "+14155550100"
PURPOSES = ("page", "taken", "retraction", "resolved", "summary")
REGISTRY: dict[str, Any] = {
    "elders": [
        {
            "id": "e1",
            "name": "王秀英",
            "community": "幸福社区",
            "grid": "g1",
            "address": "幸福路12号3楼",
            "home": {"lat": 31.2304, "lon": 121.4737},
            "contacts": [
                {"name": "王强", "phone": SON, "priority": 1},
                {"name": "Mei Wang", "phone": ABROAD, "language": "en", "priority": 2, "channels": ["sms"]},
            ],
            "devices": [{"id": "pg-1", "type": "pager"}, {"id": "wb-1", "type": "wristband"}],
        }
    ],
    "responders": [
        {"id": "grid", "name": "王芳", "role": "grid_worker", "phone": GRID, "grid": "g1", "channels": ["voice"]},
        {"id": "hotline", "name": "热线", "role": "hotline", "phone": "+8640000000001", "channels": ["voice"]},
    ],
}
ESCALATION: dict[str, Any] = {
    "policies": [
        {
            "name": "sos",
            "kinds": ["sos"],
            "tiers": [
                {"roles": {"family": ["sms", "voice"]}, "wait_s": 30},
                {"roles": {"grid_worker": ["voice"]}, "wait_s": 30},
                {"roles": {"hotline": ["voice"]}, "wait_s": 30},
            ],
        },
        {"name": "default", "kinds": ["*"], "tiers": [{"roles": {"hotline": ["voice"]}, "wait_s": 600}]},
    ]
}


def common_section(endpoint: str) -> dict[str, Any]:
    """What both providers' sections hold: the key pair, the callback token, the signature, the fake."""
    return {
        "access_key_id": KEY_ID,
        "access_key_secret": SECRET,
        "callback_token": CALLBACK_TOKEN,
        "sign_name": "幸福社区",
        "endpoint": endpoint,
        "protocol": "http",
        "timeout_s": 2,
    }


def aliyun_section(endpoint: str) -> dict[str, Any]:
    return {
        **common_section(endpoint),
        "called_show_number": "057100000000",
        "sms_templates": {
            **{p: {"template": f"SMS_{p.upper()}", "params": {"name": "elder", "code": "code"}} for p in PURPOSES},
            "page": {"template": "SMS_PAGE", "params": {"name": "elder", "what": "kind", "code": "code"}},
        },
        "voice_templates": {
            "page": {"template": "TTS_PAGE", "params": {"name": "elder", "what": "kind"}},
            "key1": {"template": "TTS_TAKEN", "params": {"code": "code"}},
            "key2": {"template": "TTS_PASSED"},
        },
    }


def tencent_section(endpoint: str) -> dict[str, Any]:
    return {
        **common_section(endpoint),
        "sms_app_id": "1400000000",
        "voice_app_id": "1400000001",
        "sms_templates": {
            p: {"template": f"10{i}", "params": {"1": "elder", "2": "code"}} for i, p in enumerate(PURPOSES)
        },
        "voice_templates": {"page": {"template": "2001", "params": {"1": "elder", "2": "kind"}}},
    }


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with running_in_thread(FakeTwilio(SID, TWILIO_TOKEN)) as running:
        yield running


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def aliyun(port: int) -> Iterator[FakeAliyun]:
    fake = FakeAliyun(KEY_ID, SECRET, callback_base=f"http://127.0.0.1:{port}", token=CALLBACK_TOKEN)
    with running_in_thread(fake) as running:
        yield running


@pytest.fixture
def tencent(port: int) -> Iterator[FakeTencent]:
    fake = FakeTencent(KEY_ID, SECRET, callback_base=f"http://127.0.0.1:{port}", token=CALLBACK_TOKEN)
    with running_in_thread(fake) as running:
        yield running


def start(gateway: GatewayRunner, tmp_path: Path, port: int, twilio: FakeTwilio, **china: dict[str, Any]) -> None:
    registry = tmp_path / "registry.yaml"
    registry.write_text(yaml.safe_dump(REGISTRY, allow_unicode=True))
    gateway.start(
        registry={"file": str(registry)},
        escalation=ESCALATION,
        notify={
            "public_base_url": f"http://127.0.0.1:{port}",
            "http_port": port,
            "backoff_initial_s": 0.2,
            "backoff_max_s": 0.5,
            "max_attempts": 2,
            "twilio": {
                "account_sid": SID,
                "auth_token": TWILIO_TOKEN,
                "sms_from": "+15005550006",
                "voice_from": "+15005550006",
                "base_url": twilio.base_url,
                "timeout_s": 2,
            },
            **china,
        },
    )


def sos(publisher: Publisher) -> None:
    publisher.publish("eldercare/v1/pager/pg-1/event", json.dumps({"ts": time.time_ns() // 1_000_000, "event": "sos"}))


def taken_by(database: str) -> tuple[Any, ...] | None:
    rows = query(database, "SELECT state, acknowledged_by FROM alerts WHERE kind = 'sos'")
    return rows[0] if rows and rows[0][0] == "acknowledged" else None


def carried(database: str) -> list[tuple[Any, ...]]:
    return query(
        database,
        "SELECT phone, channel, provider FROM notifications WHERE purpose = 'page' AND status <> 'failed' ORDER BY id",
    )


@pytest.mark.parametrize("provider", ["aliyun", "tencent"])
def test_sos_goes_out_by_the_china_provider_and_key_1_takes_it(
    provider: str,
    request: pytest.FixtureRequest,
    gateway: GatewayRunner,
    publisher: Publisher,
    broker: LocalMosquitto,
    twilio: FakeTwilio,
    database: str,
    tmp_path: Path,
    port: int,
) -> None:
    fake: ChinaFake = request.getfixturevalue(provider)
    section = aliyun_section(fake.endpoint) if provider == "aliyun" else tencent_section(fake.endpoint)
    fake.answer_as(SON, "answered", press="1")
    start(gateway, tmp_path, port, twilio, **{provider: section})
    band = CommandListener(broker.port)
    try:
        sos(publisher)
        sms = fake.wait_for(lambda: fake.messages(), what="the page by SMS")[0]
        call = fake.wait_for(lambda: fake.calls(), what="the page by call")[0]
        if provider == "aliyun":
            assert sms.to == call.to == SON[3:] and sms.template == "SMS_PAGE" and sms.sign_name == "幸福社区"
            assert sms.params == {"name": "王秀英", "what": "紧急呼叫", "code": "A1"}
            assert call.template == "TTS_PAGE" and call.extra["menu"]["MenuKeyMap.1.Code"] == "TTS_TAKEN"
        else:
            assert sms.to == call.to == SON and sms.template == "100" and sms.params == ["王秀英", "A1"]
            assert call.template == "2001" and call.params == ["王秀英", "紧急呼叫"]
        assert wait_until(lambda: taken_by(database), what="the alert taken by key 1") == ("acknowledged", "王强")
        wait_until(lambda: "help_coming" in band.commands(), what="'help is coming' on the band")
        events = query(database, "SELECT actor, channel FROM alert_events WHERE event = 'acknowledged'")
        assert events == [("王强", "voice")]
        # +86 by the China provider, the contact abroad by Twilio
        assert {(p, c, v) for p, c, v in carried(database)} >= {(SON, "sms", provider), (SON, "voice", provider)}
        wait_until(lambda: [m for m in twilio.messages if m.to == ABROAD], what="the SMS abroad, by Twilio")
        assert not [m for m in twilio.messages if m.to == SON] and not [c for c in twilio.calls if c.to == SON]
        wait_until(
            lambda: (
                query(database, "SELECT status FROM notifications WHERE phone = %s AND channel = 'sms'", (SON,))
                == [("delivered",)]
            ),
            what="the provider's delivery receipt recorded",
        )
    finally:
        band.close()


def test_a_china_provider_down_entirely_twilio_carries_the_tier_and_nobody_is_paged_twice(
    gateway: GatewayRunner,
    publisher: Publisher,
    twilio: FakeTwilio,
    aliyun: FakeAliyun,
    database: str,
    tmp_path: Path,
    port: int,
) -> None:
    aliyun.fail_for(600, "error")
    start(gateway, tmp_path, port, twilio, aliyun=aliyun_section(aliyun.endpoint))
    sos(publisher)
    wait_until(lambda: [m for m in twilio.messages if m.to == SON], what="the son's SMS by Twilio")
    wait_until(lambda: [c for c in twilio.calls if c.to == SON], what="the son's call by Twilio")
    time.sleep(2.0)  # time for any repeat to show
    assert len([m for m in twilio.messages if m.to == SON]) == 1
    assert len([c for c in twilio.calls if c.to == SON]) == 1
    assert not aliyun.messages() and not aliyun.calls()
    assert len(aliyun.refused) >= 2  # it was asked first, for the SMS and the call
    pages = carried(database)
    assert sorted((p, c) for p, c, _ in pages if p == SON) == [(SON, "sms"), (SON, "voice")]
    assert {v for p, _, v in pages if p == SON} == {"twilio"}


def test_forged_receipts_are_refused_and_a_repeated_one_is_applied_once(
    gateway: GatewayRunner,
    publisher: Publisher,
    twilio: FakeTwilio,
    aliyun: FakeAliyun,
    database: str,
    tmp_path: Path,
    port: int,
) -> None:
    aliyun.answer_as(SON, "no_answer")
    start(gateway, tmp_path, port, twilio, aliyun=aliyun_section(aliyun.endpoint))
    sos(publisher)
    call = aliyun.wait_for(lambda: aliyun.calls(), what="the call")[0]
    # another token: refused before anything is read
    assert (
        aliyun.forge(
            "voice-call-report",
            [{"call_id": call.sid, "status_code": "300000", "dtmf": "1", "out_id": call.ours}],
            token="x" * 24,
        ).status
        == 403
    )
    # the right token, but a call that is not the one this notification was placed as
    other = {"call_id": "999^forged", "status_code": "300000", "dtmf": "1", "out_id": call.ours}
    assert aliyun.forge("voice-call-report", [other], token=CALLBACK_TOKEN).status == 200
    assert aliyun.forge("voice-call-report", {"not": "an array"}, token=CALLBACK_TOKEN).status == 400
    with httpx.Client() as client:
        assert (
            client.post(f"http://127.0.0.1:{port}/aliyun/{CALLBACK_TOKEN}/sms-up", content=b"\xff").status_code == 400
        )
    time.sleep(0.5)
    assert taken_by(database) is None
    # the genuine key press, then the provider's retry of it
    pressed = aliyun.press_key(call, "1")
    assert pressed.status == 200
    wait_until(lambda: taken_by(database), what="the alert taken")
    aliyun.wait_for(lambda: len(aliyun.receipts) >= 2, what="the SMS and call receipts")
    time.sleep(0.5)

    def trail() -> list[tuple[Any, ...]]:
        return query(database, "SELECT event, actor, channel FROM alert_events ORDER BY id")

    before = trail()
    assert ("acknowledged", "王强", "voice") in before and ("notification_delivered", "王强", "sms") in before
    assert ("notification_no_answer", "王强", "voice") in before  # the call itself was not answered
    assert aliyun.redeliver(pressed).status == 200
    for receipt in list(aliyun.receipts):
        assert aliyun.redeliver(receipt).status == 200
    time.sleep(0.5)
    assert trail() == before


def test_an_sms_reply_with_the_alert_code_takes_it(
    gateway: GatewayRunner,
    publisher: Publisher,
    twilio: FakeTwilio,
    tencent: FakeTencent,
    database: str,
    tmp_path: Path,
    port: int,
) -> None:
    tencent.answer_as(SON, "no_answer")
    start(gateway, tmp_path, port, twilio, tencent=tencent_section(tencent.endpoint))
    sos(publisher)
    tencent.wait_for(lambda: tencent.messages(), what="the SMS")
    assert tencent.reply_sms(SON, "好的").status == 200  # not an answer: nothing happens
    assert tencent.reply_sms("+8613700000000", "1 A1").status == 200  # a number nobody paged
    time.sleep(0.5)
    assert taken_by(database) is None
    assert tencent.reply_sms(SON, "1 a1").status == 200
    assert wait_until(lambda: taken_by(database), what="taken by the reply") == ("acknowledged", "王强")
    assert query(database, "SELECT channel FROM alert_events WHERE event = 'acknowledged'") == [("sms",)]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda s: s["sms_templates"].pop("resolved"), "notify.aliyun.sms_templates: no template for 'resolved'"),
        (lambda s: s["voice_templates"].pop("page"), "notify.aliyun.voice_templates: no template for 'page'"),
        (
            lambda s: s["sms_templates"]["page"]["params"].update(where="location"),
            "notify.aliyun.sms_templates.page.params.where: unknown field 'location'",
        ),
        (lambda s: s.update(callback_token="short"), "notify.aliyun.callback_token"),
    ],
)
def test_a_template_mapping_missing_is_a_start_up_error_naming_it(change: Any, named: str, tmp_path: Path) -> None:
    section = aliyun_section("127.0.0.1:1")
    change(section)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"notify": {"aliyun": section}}, allow_unicode=True))
    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={})
    assert named in str(raised.value)


def test_key_2_on_the_aliyun_call_passes_it_on(
    gateway: GatewayRunner,
    publisher: Publisher,
    twilio: FakeTwilio,
    aliyun: FakeAliyun,
    database: str,
    tmp_path: Path,
    port: int,
) -> None:
    aliyun.answer_as(SON, "answered", press="2")
    start(gateway, tmp_path, port, twilio, aliyun=aliyun_section(aliyun.endpoint))
    sos(publisher)
    wait_until(
        lambda: query(database, "SELECT actor, channel FROM alert_events WHERE event = 'passed_on'"),
        what="the son passing it on by key 2",
    )
    assert query(database, "SELECT actor, channel FROM alert_events WHERE event = 'passed_on'") == [("王强", "voice")]
    assert taken_by(database) is None
