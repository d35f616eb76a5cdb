"""Alert texts: every kind x language x purpose fits two SMS segments, China rules, TwiML."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.notify.templates import (
    ALERT_KINDS,
    GSM7_BASIC,
    GSM7_EXTENSION,
    KIND_NAMES,
    PURPOSES,
    MessageContext,
    kind_name,
    language_for,
    render_gather_reply,
    render_sms,
    render_summary_sms,
    render_voice_twiml,
    sms_segments,
)

WHEN = int(datetime(2025, 11, 22, 21, 5, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp() * 1000)
LONG_NAME = "阿卜杜热合曼·买买提明"
LONG_ADDRESS = "上海市浦东新区张江镇幸福社区康乐路一千二百八十八弄二十三号楼三单元一千五百零二室（近地铁站）"
MAP = "https://uri.amap.com/marker?position=121.47370,31.23042&coordinate=wgs84"
ACTION = "https://gw.example.cn/twilio/voice/gather/42?tier=1&round=2"
EVIDENCE: dict[str, dict[str, Any]] = {
    "hypoglycaemia": {"glucose": 2.8},
    "hyperglycaemia": {"glucose": 22.4},
    "hypertensive_crisis": {"systolic": 186.0, "diastolic": 124.0, "hr": 88.0},
    "hypotension": {"systolic": 82.0, "diastolic": 50.0},
    "hr_high": {"hr": 142.0},
    "hr_low": {"hr": 38.0},
    "spo2_low": {"spo2": 86.0},
    "low_battery": {"battery_pct": 8.0, "hours_left": 1.5},
    "geofence_exit": {"metres_outside": 412.3, "lat": 31.2, "lon": 121.5},
    "device_silent": {"silent_for_s": 2100.0},
    "fall": {"source": "band"},
    "fall_no_recovery": {"no_movement_for_s": 120.0},
    "inactivity": {"hours_without_movement": 13.5},
    "sos": {"source": "pager"},
}
REQUIRED_KINDS = (
    "sos",
    "call",
    "fall",
    "geofence_exit",
    "hypoglycaemia",
    "hyperglycaemia",
    "hypertensive_crisis",
    "hypotension",
    "hr_high",
    "hr_low",
    "spo2_low",
    "low_battery",
    "device_silent",
    "not_worn",
    "inactivity",
)


def ctx(kind: str = "sos", language: str = "zh", **changes: Any) -> MessageContext:
    fields: dict[str, Any] = {
        "elder_name": "王秀英",
        "kind": kind,
        "severity": "critical",
        "when_ms": WHEN,
        "alert_code": "A17",
        "address": "幸福社区3号楼501",
        "lat": 31.230416,
        "lon": 121.473701,
        "evidence": EVIDENCE.get(kind, {}),
        "taken_by": "王芳",
        "outcome": "handled_at_home",
        "role": "family",
        "recipient_language": language,
    }
    fields.update(changes)
    return MessageContext(**fields)


# --- every combination fits -------------------------------------------------------------------------

COMBINATIONS = list(
    itertools.product(
        (*ALERT_KINDS, "some_new_kind"), ("zh", "en"), PURPOSES, ((True, True), (False, False), (True, False))
    )
)


@pytest.mark.parametrize(("kind", "language", "purpose", "route"), COMBINATIONS)
def test_every_sms_fits_two_segments_and_keeps_what_matters(
    kind: str, language: str, purpose: str, route: tuple[bool, bool]
) -> None:
    replies, links = route
    for name, address in ((LONG_NAME, LONG_ADDRESS), ("王秀英", ""), ("Li", LONG_ADDRESS * 2)):
        context = ctx(kind, language, elder_name=name, address=address, taken_by="欧阳慕容诸葛")
        text = render_sms(context, purpose, replies_supported=replies, links_allowed=links)
        assert 1 <= sms_segments(text) <= 2, text
        assert name in text and kind_name(kind, language) in text and "A17" in text
        if not links:
            assert "http" not in text
        if purpose == "page":
            if replies:
                assert text.endswith("回复 1 确认处理 A17" if language == "zh" else "Reply 1 to take A17")
            else:
                assert text.endswith(
                    "请接听来电并按 1 确认" if language == "zh" else "Answer our call and press 1 to take it"
                )
        if not replies:
            assert "回复" not in text and "Reply" not in text


def test_required_kinds_have_names_in_both_languages() -> None:
    for kind in REQUIRED_KINDS:
        zh, en = KIND_NAMES[kind]
        assert zh and en and all(c in GSM7_BASIC for c in en), kind
    assert kind_name("sos", "zh") == "紧急呼叫" and kind_name("sos", "en-US") == "SOS emergency call"
    assert kind_name("brand_new", "zh") == "健康告警" and kind_name("brand_new", "en") == "health alert"


# --- the page ------------------------------------------------------------------------------------


def test_a_short_page_says_what_who_where_when_and_how_to_take_it() -> None:
    text = render_sms(ctx("hypoglycaemia"), "page", replies_supported=True, links_allowed=True)
    assert text.splitlines() == [  # the map link would make it three segments: it gave way
        "【紧急】王秀英 低血糖 (A17)",
        "11月22日 21:05",
        "血糖 2.8 mmol/L",
        "地址：幸福社区3号楼501",
        "回复 1 确认处理 A17",
    ]
    short = render_sms(
        ctx("fall", elder_name="Li", address="3-501"), "page", replies_supported=True, links_allowed=True
    )
    assert short.splitlines() == [
        "【紧急】Li 跌倒 (A17)",
        "11月22日 21:05",
        "地址：3-501",
        f"地图 {MAP}",
        "回复 1 确认处理 A17",
    ]
    wandered = render_sms(ctx("geofence_exit"), "page", replies_supported=True, links_allowed=True)
    assert wandered.splitlines() == [  # where the elder is matters more than the evidence or the home
        "【紧急】王秀英 离开安全区域 (A17)",
        "11月22日 21:05",
        f"地图 {MAP}",
        "回复 1 确认处理 A17",
    ]
    english = render_sms(
        ctx("hypertensive_crisis", "en", address=""), "page", replies_supported=False, links_allowed=False
    )
    assert english.splitlines() == [
        "URGENT: 王秀英 - hypertensive crisis (A17)",
        "22 Nov 21:05",
        "BP 186/124 mmHg",
        "Answer our call and press 1 to take it",
    ]


@pytest.mark.parametrize(
    ("kind", "zh", "en"),
    [
        ("hr_high", "心率 142 次/分", "Heart rate 142 bpm"),
        ("spo2_low", "血氧 86%", "SpO2 86%"),
        ("low_battery", "电量 8%", "Battery 8%"),
        ("geofence_exit", "已离开安全区 412.3 米", "412.3 m outside"),
        ("hyperglycaemia", "血糖 22.4 mmol/L", "Glucose 22.4 mmol/L"),
    ],
)
def test_the_key_value_of_the_evidence_is_shown(kind: str, zh: str, en: str) -> None:
    assert zh in render_sms(ctx(kind, address=""), "page", replies_supported=False, links_allowed=False)
    assert en in render_sms(ctx(kind, "en", address=""), "page", replies_supported=False, links_allowed=False)


def test_odd_evidence_is_ignored() -> None:
    for evidence in ({"glucose": "low"}, {"glucose": float("nan")}, {"glucose": True}, {"systolic": 190}):
        text = render_sms(ctx("hypoglycaemia", evidence=evidence), "page", replies_supported=False, links_allowed=False)
        assert "mmol" not in text and "mmHg" not in text


def test_china_rules_no_link_no_reply_promise() -> None:
    text = render_sms(ctx("geofence_exit"), "page", replies_supported=False, links_allowed=False)
    assert "http" not in text and "amap" not in text and "回复" not in text
    assert text.endswith("请接听来电并按 1 确认")
    no_position = render_sms(ctx(lat=None, lon=None), "page", replies_supported=True, links_allowed=True)
    assert "http" not in no_position


def test_shortening_cuts_the_address_first_and_never_the_essentials() -> None:
    text = render_sms(
        ctx("hypoglycaemia", address=LONG_ADDRESS * 3), "page", replies_supported=True, links_allowed=True
    )
    assert sms_segments(text) == 2
    assert text.startswith("【紧急】王秀英 低血糖 (A17)") and text.endswith("回复 1 确认处理 A17")
    assert "…" in text and "地址：上海市浦东新区" in text
    assert "http" not in text  # the link gave way before the evidence
    assert "血糖 2.8 mmol/L" in text


def test_an_absurd_name_is_cut_but_the_text_still_fits() -> None:
    for purpose in PURPOSES:
        text = render_sms(
            ctx(elder_name="王" * 300, taken_by="李" * 300), purpose, replies_supported=True, links_allowed=True
        )
        assert sms_segments(text) <= 2 and "A17" in text and "王王王" in text


def test_english_texts_stay_gsm7_for_ascii_names() -> None:
    for kind, purpose in itertools.product(ALERT_KINDS, PURPOSES):
        context = ctx(
            kind,
            "en",
            elder_name="Wang Xiuying",
            taken_by="Wang Fang",
            address="Room 501, Building 3, Xingfu Community, Pudong District, Shanghai " * 4,
        )
        text = render_sms(context, purpose, replies_supported=True, links_allowed=True)
        assert all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text), (kind, purpose, text)
        assert sms_segments(text) <= 2


# --- the other purposes ---------------------------------------------------------------------------


def test_taken_retraction_resolved() -> None:
    assert render_sms(ctx(), "taken", replies_supported=True, links_allowed=True).startswith(
        "王芳 已接手 王秀英 的紧急呼叫 (A17)"
    )
    assert render_sms(ctx(language="en"), "taken", replies_supported=True, links_allowed=True).startswith(
        "王芳 has taken 王秀英's SOS emergency call (A17)"
    )
    nobody = render_sms(ctx(taken_by=None), "taken", replies_supported=False, links_allowed=False)
    assert nobody.startswith("有人")
    retraction = render_sms(ctx(), "retraction", replies_supported=True, links_allowed=True)
    assert retraction.startswith("已取消") and "王秀英" in retraction
    assert render_sms(ctx(language="en"), "retraction", replies_supported=True, links_allowed=True).startswith(
        "Cancelled"
    )
    resolved = render_sms(ctx(outcome="sent_to_hospital"), "resolved", replies_supported=True, links_allowed=True)
    assert resolved.startswith("已解决") and "已送医" in resolved
    assert "taken to hospital" in render_sms(
        ctx(language="en", outcome="sent_to_hospital"), "resolved", replies_supported=True, links_allowed=True
    )
    with pytest.raises(ValueError, match="unknown purpose"):
        render_sms(ctx(), "reminder", replies_supported=True, links_allowed=True)


# --- the summary ----------------------------------------------------------------------------------


def test_summary_lists_the_most_severe_first_and_fits() -> None:
    alerts = [
        ctx("low_battery", severity="warning", alert_code="A20", when_ms=WHEN + 60_000),
        ctx("sos", elder_name="李建国", alert_code="A21", when_ms=WHEN + 120_000),
        ctx("hypoglycaemia", elder_name=LONG_NAME, alert_code="A19"),
    ]
    text = render_summary_sms(alerts, replies_supported=True, links_allowed=False)
    lines = text.splitlines()
    assert lines[0] == "您有 3 条未处理告警："
    assert [line.split()[-2] for line in lines[1:4]] == ["A19", "A21", "A20"]
    assert lines[1].endswith("21:05") and lines[-1] == "回复 1 加编号确认处理，如 1 A19"
    assert sms_segments(text) <= 2
    english = render_summary_sms(
        [ctx(language="en", alert_code=f"A{i}") for i in range(2)], replies_supported=False, links_allowed=False
    )
    assert english.startswith("2 open alerts:")
    assert english.endswith("Answer our call and press 1 to take one.")


def test_summary_of_many_counts_what_does_not_fit() -> None:
    alerts = [ctx(elder_name=LONG_NAME, alert_code=f"A{i}") for i in range(12)]
    for language, more in (("zh", "另有"), ("en", "more")):
        text = render_summary_sms(
            [ctx(**{**_fields(a), "recipient_language": language}) for a in alerts],
            replies_supported=False,
            links_allowed=False,
        )
        assert sms_segments(text) <= 2 and more in text and "A0 " in text


def test_summary_of_one_is_the_page_and_of_none_an_error() -> None:
    assert render_summary_sms([ctx()], replies_supported=True, links_allowed=True) == render_sms(
        ctx(), "page", replies_supported=True, links_allowed=False
    )
    with pytest.raises(ValueError):
        render_summary_sms([], replies_supported=True, links_allowed=True)


def _fields(context: MessageContext) -> dict[str, Any]:
    return {name: getattr(context, name) for name in MessageContext.__dataclass_fields__}


# --- segments ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("", 0),
        ("a", 1),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),
        ("€" * 81, 2),
        ("{}" * 40, 1),
        ("[" * 81, 2),
        ("a" * 159 + "^", 2),
        ("é" * 160, 1),
        ("ç" * 70, 1),
        ("ç" * 71, 2),  # ç is not GSM-7 (only Ç is)
        ("中" * 70, 1),
        ("中" * 71, 2),
        ("中" * 134, 2),
        ("中" * 135, 3),
        ("a" * 69 + "中", 1),
        ("😀" * 35, 1),
        ("😀" * 36, 2),
        ("😀" * 34 + "a", 1),
        ("😀" * 34 + "a" + "😀", 2),
        ("a" * 152 + "€" + "a" * 152, 3),  # an escape pair is never split across parts
        ("中" * 66 + "😀" + "中" * 66, 3),  # nor a surrogate pair
    ],
)
def test_sms_segments(text: str, segments: int) -> None:
    assert sms_segments(text) == segments


# --- voice ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["zh", "en"])
def test_voice_twiml_reads_the_alert_twice_inside_the_gather(language: str) -> None:
    context = ctx("hypoglycaemia", language, address=LONG_ADDRESS, elder_name=LONG_NAME)
    twiml = render_voice_twiml(context, ACTION)
    root = ET.fromstring(twiml)
    assert root.tag == "Response" and len(twiml) < 4000
    gather, goodbye = list(root)
    assert gather.tag == "Gather" and gather.attrib == {
        "numDigits": "1",
        "action": ACTION,
        "method": "POST",
        "timeout": "8",
    }
    first, second = list(gather)
    say_language = "zh-CN" if language == "zh" else "en-US"
    assert first.tag == second.tag == goodbye.tag == "Say"
    assert first.attrib == second.attrib == goodbye.attrib == {"language": say_language}
    assert first.text == second.text and first.text
    assert LONG_NAME in first.text and "A17" in first.text
    assert (
        ("按 1" in first.text and "按 2" in first.text)
        if language == "zh"
        else ("Press 1" in first.text and "press 2" in first.text)
    )
    assert ("血糖 2.8" if language == "zh" else "blood sugar 2.8") in first.text
    assert "&amp;round=2" in twiml


def test_voice_for_family_and_for_responders() -> None:
    family = ET.fromstring(render_voice_twiml(ctx(), ACTION)).find("Gather/Say")
    worker = ET.fromstring(render_voice_twiml(ctx(role="grid_worker"), ACTION)).find("Gather/Say")
    assert family is not None and worker is not None
    assert "您的家人王秀英" in (family.text or "") and "您的家人" not in (worker.text or "")
    voice = ET.fromstring(render_voice_twiml(ctx(), ACTION, voice="Polly.Zhiyu")).find("Gather/Say")
    assert voice is not None and voice.get("voice") == "Polly.Zhiyu"


def test_hostile_names_are_escaped_everywhere() -> None:
    hostile = "王<b>&\"秀'英</Say><Hangup/>\x00\x07\ud800\n"
    context = ctx(elder_name=hostile, address="<Redirect>http://evil</Redirect> & co", taken_by="<x>")
    root = ET.fromstring(render_voice_twiml(context, ACTION + '"><Hangup/>'))
    assert [element.tag for element in root.iter()] == ["Response", "Gather", "Say", "Say", "Say"]
    say = root.find("Gather/Say")
    assert say is not None and "王<b>&\"秀'英</Say><Hangup/>" in (say.text or "")
    assert "<Redirect>http://evil</Redirect> & co" in (say.text or "")
    gather = root.find("Gather")
    assert gather is not None and gather.get("action") == ACTION + '"><Hangup/>'
    reply = ET.fromstring(f"<Response>{render_gather_reply('zh', None, hostile)}</Response>")
    assert [element.tag for element in reply] == ["Say", "Hangup"]
    for purpose in PURPOSES:
        text = render_sms(context, purpose, replies_supported=True, links_allowed=True)
        assert not any(ord(c) < 0x20 and c != "\n" for c in text) and "\ud800" not in text
        assert "王<b>&\"秀'英</Say><Hangup/>" in text


@pytest.mark.parametrize(
    ("language", "accepted", "other", "expected"),
    [
        ("zh", True, None, "谢谢，您已确认处理，请尽快前往"),
        ("zh", False, None, "已转给下一位"),
        ("zh", None, None, "未识别的按键"),
        ("zh", True, "王芳", "王芳 已在处理"),
        ("en", True, None, "You have taken this alert"),
        ("en", False, None, "passing it to the next person"),
        ("en", None, None, "did not recognise"),
        ("en-US", False, "Wang Fang", "Wang Fang is already handling it"),
    ],
)
def test_gather_reply(language: str, accepted: bool | None, other: str | None, expected: str) -> None:
    fragment = render_gather_reply(language, accepted, other)
    root = ET.fromstring(f"<Response>{fragment}</Response>")  # the webhook wraps the verbs
    say, hangup = list(root)
    assert say.tag == "Say" and hangup.tag == "Hangup" and expected in (say.text or "")
    assert say.get("language") == ("en-US" if language.startswith("en") else "zh-CN")


@pytest.mark.parametrize(
    ("tag", "language"),
    [
        ("zh", "zh"),
        ("zh-CN", "zh"),
        ("zh_Hans", "zh"),
        ("cmn", "zh"),
        ("", "zh"),
        ("fr", "zh"),
        ("en", "en"),
        ("en-US", "en"),
        ("EN_gb", "en"),
        (" en ", "en"),
        ("eng", "zh"),
    ],
)
def test_language_for(tag: str, language: str) -> None:
    assert language_for(tag) == language
