"""What people read and hear: alert SMS and voice TwiML, in Simplified Chinese or English.

Pure functions, no I/O, so every kind x language x purpose can be checked in a table.

Why the constraints:

* An SMS must fit in one or two segments. Longer texts arrive out of order or in
  pieces on old handsets, cost more, and make carriers flag the sender. One Chinese
  character forces the whole text into UCS-2 (70 units, 67 per part), so a text is
  shortened in a fixed order when it would not fit: the address is cut, then the
  map link, the evidence detail, the address and the time are dropped (for a
  geofence exit the link goes last but one). The elder's
  name, the kind, the alert code and how to acknowledge always stay.
* Twilio cannot receive replies from, nor send links to, +86 numbers; the caller says
  what the recipient's route supports and the text never promises a reply that
  would go nowhere.
* Times are the wall clock in Asia/Shanghai, where the elders and responders are.
* Names and addresses come from registry data typed by people: they are cleaned of
  control characters and XML-escaped before they reach a phone or a TwiML document.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

Language = Literal["zh", "en"]
Purpose = Literal["page", "taken", "retraction", "resolved"]
PURPOSES: tuple[Purpose, ...] = ("page", "taken", "retraction", "resolved")
MAX_SEGMENTS = 2
SHANGHAI = ZoneInfo("Asia/Shanghai")
SAY_LANGUAGE: dict[Language, str] = {"zh": "zh-CN", "en": "en-US"}

# (Chinese, English). Kept short: the name of the kind is never dropped from an SMS.
KIND_NAMES: dict[str, tuple[str, str]] = {
    "sos": ("紧急呼叫", "SOS emergency call"),
    "call": ("呼叫求助", "call for help"),
    "fall": ("跌倒", "fall"),
    "fall_no_recovery": ("跌倒后未起身", "fall, not getting up"),
    "geofence_exit": ("离开安全区域", "left the safe zone"),
    "hypoglycaemia": ("低血糖", "low blood sugar"),
    "hyperglycaemia": ("高血糖", "high blood sugar"),
    "hypertensive_crisis": ("高血压危象", "hypertensive crisis"),
    "hypotension": ("低血压", "low blood pressure"),
    "hr_high": ("心率过快", "heart rate too high"),
    "hr_low": ("心率过慢", "heart rate too low"),
    "spo2_low": ("血氧过低", "low blood oxygen"),
    "low_battery": ("设备电量低", "device battery low"),
    "device_silent": ("设备离线", "device offline"),
    "not_worn": ("手环未佩戴", "wristband not worn"),
    "inactivity": ("长时间无活动", "no movement for hours"),
    "cancel_late": ("取消（超时）", "late cancel"),
}
GENERIC_KIND: tuple[str, str] = ("健康告警", "health alert")
ALERT_KINDS: tuple[str, ...] = tuple(KIND_NAMES)

OUTCOME_NAMES: dict[str, tuple[str, str]] = {
    "false_alarm": ("误报", "false alarm"),
    "handled_at_home": ("已在家处理", "handled at home"),
    "sent_to_hospital": ("已送医", "taken to hospital"),
    "condition_cleared": ("情况已恢复", "condition cleared"),
    "other": ("已处理", "dealt with"),
}
_SEVERITY_PREFIX: dict[str, tuple[str, str]] = {
    "critical": ("【紧急】", "URGENT: "),
    "warning": ("【提醒】", "ALERT: "),
    "info": ("【通知】", "NOTICE: "),
}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# GSM 03.38: the basic table costs one septet, the extension table two (escape + char).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

# Characters XML 1.0 cannot carry at all, plus every run of whitespace (a name with a
# newline in it would break the layout of the SMS).
_XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class MessageContext:
    """Everything a text about one alert for one recipient may say."""

    elder_name: str
    kind: str
    severity: str  # "info" | "warning" | "critical"
    when_ms: int  # when the alert opened (epoch ms, UTC)
    alert_code: str  # e.g. "A17": what people quote back
    address: str = ""
    lat: float | None = None
    lon: float | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)
    taken_by: str | None = None  # "taken" messages: who took it
    outcome: str | None = None  # "resolved" messages: gateway.alerting.actions outcome
    role: str = "family"  # the recipient's role
    recipient_language: str = "zh"


def language_for(language: str) -> Language:
    """The template language for a registry language tag; anything not English is Chinese.

    "zh", "zh-CN", "zh_Hans", "cmn" -> "zh"; "en", "en-US", "EN_gb" -> "en".
    """
    tag = language.strip().lower().replace("_", "-")
    return "en" if tag == "en" or tag.startswith("en-") else "zh"


def kind_name(kind: str, language: str) -> str:
    names = KIND_NAMES.get(kind, GENERIC_KIND)
    return names[0] if language_for(language) == "zh" else names[1]


def sms_segments(text: str) -> int:
    """How many SMS segments ``text`` takes (0 for an empty text).

    GSM-7 when every character is in the GSM 03.38 tables (160 septets, 153 per part
    of a concatenated message, extension characters cost two), otherwise UCS-2
    (70 UTF-16 units, 67 per part). A character is never split across parts, as
    handsets and Twilio do, so the count can exceed ceil(length / 153).
    """
    if not text:
        return 0
    if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text):
        costs = [2 if c in GSM7_EXTENSION else 1 for c in text]
        single, multi = 160, 153
    else:
        costs = [2 if ord(c) > 0xFFFF else 1 for c in text]
        single, multi = 70, 67
    if sum(costs) <= single:
        return 1
    segments, used = 1, 0
    for cost in costs:
        if used + cost > multi:
            segments, used = segments + 1, 0
        used += cost
    return segments


def render_sms(ctx: MessageContext, purpose: str, *, replies_supported: bool, links_allowed: bool) -> str:
    """The SMS for one alert and one recipient; always one or two segments.

    ``purpose``: "page" (something happened, please act), "taken" (someone took it, you
    need not), "retraction" (it was a false alarm / cancelled), "resolved".
    """
    lang = language_for(ctx.recipient_language)
    if purpose in ("page", "summary"):
        return _page(ctx, lang, replies_supported=replies_supported, links_allowed=links_allowed)
    if purpose not in PURPOSES:
        raise ValueError(f"unknown purpose {purpose!r}; one of {', '.join(PURPOSES)}")
    name, what, code = _name(ctx.elder_name), kind_name(ctx.kind, lang), _clean(ctx.alert_code)
    if purpose == "taken":
        who = _name(ctx.taken_by, 20) if _clean(ctx.taken_by) else ("有人" if lang == "zh" else "Someone")
        if lang == "zh":
            return _fit(lambda n: f"{who} 已接手 {n} 的{what} ({code})，您无需再处理。", name)
        return _fit(lambda n: f"{who} has taken {n}'s {what} ({code}). No action needed from you.", name)
    if purpose == "retraction":
        if lang == "zh":
            return _fit(lambda n: f"已取消：{n} 的{what} ({code}) 为误报或已撤销，无需前往。", name)
        return _fit(lambda n: f"Cancelled: {n}'s {what} ({code}) was a false alarm. No need to go.", name)
    result = _outcome(ctx.outcome, lang)
    if lang == "zh":
        by = f"，处理人 {_name(ctx.taken_by, 20)}" if _clean(ctx.taken_by) else ""
        return _fit(lambda n: f"已解决：{n} 的{what} ({code})，{result}{by}。", name)
    by = f" by {_name(ctx.taken_by, 20)}" if _clean(ctx.taken_by) else ""
    return _fit(lambda n: f"Resolved: {n}'s {what} ({code}), {result}{by}.", name)


def render_summary_sms(contexts: Sequence[MessageContext], *, replies_supported: bool, links_allowed: bool) -> str:
    """Several open alerts for one recipient in one SMS (carriers block a sender that
    texts one phone too often). Most severe and oldest first; what does not fit is
    counted ("+2 more"). ``links_allowed`` is accepted for symmetry: a summary has no links.
    """
    del links_allowed
    if not contexts:
        raise ValueError("a summary needs at least one alert")
    if len(contexts) == 1:
        return render_sms(contexts[0], "page", replies_supported=replies_supported, links_allowed=False)
    lang = language_for(contexts[0].recipient_language)
    order = sorted(contexts, key=lambda c: (-_severity_rank(c.severity), c.when_ms))
    lines = [
        f"{_name(c.elder_name, 12)} {kind_name(c.kind, lang)} {_clean(c.alert_code)} "
        f"{_local(c.when_ms).strftime('%H:%M')}"
        for c in order
    ]
    if lang == "zh":
        head = f"您有 {len(order)} 条未处理告警："
        ack = "回复 1 加编号确认处理，如 1 " if replies_supported else "请接听来电并按 1 确认。"
        more = "另有 {} 条"
    else:
        head = f"{len(order)} open alerts:"
        ack = (
            "Reply 1 and the code to take one, e.g. 1 "
            if replies_supported
            else "Answer our call and press 1 to take one."
        )
        more = "+{} more"
    if replies_supported:
        ack += _clean(order[0].alert_code)
    shown = len(lines)
    while True:
        rest = [more.format(len(lines) - shown)] if shown < len(lines) else []
        text = "\n".join([head, *lines[:shown], *rest, ack])
        if shown <= 1 or sms_segments(text) <= MAX_SEGMENTS:
            return text
        shown -= 1


def render_voice_twiml(ctx: MessageContext, gather_action_url: str, *, voice: str | None = None) -> str:
    """The call: the alert read twice inside a one-digit ``<Gather>`` (1 takes it, 2
    passes it on), then a goodbye. No key press means the call ends without an answer
    and the escalation goes on. ``voice`` overrides the account's default voice for
    the language (Twilio console, text-to-speech settings).
    """
    lang = language_for(ctx.recipient_language)
    speech = _spoken_alert(ctx, lang)
    response = ET.Element("Response")
    gather = ET.SubElement(
        response,
        "Gather",
        {"numDigits": "1", "action": _clean_xml(gather_action_url), "method": "POST", "timeout": "8"},
    )
    for _ in range(2):
        _say(gather, speech, lang, voice)
    goodbye = (
        "没有收到按键，我们将联系其他人。再见。"
        if lang == "zh"
        else "We did not get a key press. We will contact someone else. Goodbye."
    )
    _say(response, goodbye, lang, voice)
    return '<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(response, encoding="unicode")


def render_gather_reply(language: str, accepted: bool | None, taken_by_other: str | None) -> str:
    """What the caller hears after pressing a key: TwiML verbs (``<Say>`` and
    ``<Hangup/>``) for the webhook to put inside its ``<Response>``.

    ``taken_by_other``: someone else already took it; ``accepted`` True: pressed 1,
    False: pressed 2, None: any other key.
    """
    lang = language_for(language)
    if taken_by_other:
        other = _name(taken_by_other, 24)
        text = f"{other} 已在处理，谢谢您。" if lang == "zh" else f"{other} is already handling it. Thank you."
    elif accepted is True:
        text = (
            "谢谢，您已确认处理，请尽快前往。"
            if lang == "zh"
            else "Thank you. You have taken this alert. Please go as soon as you can."
        )
    elif accepted is False:
        text = "好的，已转给下一位。" if lang == "zh" else "All right, we are passing it to the next person."
    else:
        text = (
            "未识别的按键，我们将联系其他人。再见。"
            if lang == "zh"
            else "Sorry, we did not recognise that key. We will contact someone else. Goodbye."
        )
    holder = ET.Element("Response")
    _say(holder, text, lang, None)
    ET.SubElement(holder, "Hangup")
    return "".join(ET.tostring(child, encoding="unicode") for child in holder)


# --- the page -------------------------------------------------------------------------------------


def _page(ctx: MessageContext, lang: Language, *, replies_supported: bool, links_allowed: bool) -> str:
    code = _clean(ctx.alert_code)
    prefix = _SEVERITY_PREFIX.get(ctx.severity, _SEVERITY_PREFIX["warning"])[0 if lang == "zh" else 1]
    what = kind_name(ctx.kind, lang)
    if lang == "zh":
        ack = f"回复 1 确认处理 {code}" if replies_supported else "请接听来电并按 1 确认"
    else:
        ack = f"Reply 1 to take {code}" if replies_supported else "Answer our call and press 1 to take it"
    address = _clean(ctx.address)
    link = _map_link(ctx.lat, ctx.lon) if links_allowed else ""
    parts: dict[str, str] = {
        "time": _when(ctx.when_ms, lang),
        "evidence": _evidence(ctx, lang, spoken=False),
        "address": (f"地址：{address}" if lang == "zh" else f"Address: {address}") if address else "",
        "link": (f"地图 {link}" if lang == "zh" else f"Map: {link}") if link else "",
    }

    def build(name: str, shown: dict[str, str]) -> str:
        head = f"{prefix}{name} {what} ({code})" if lang == "zh" else f"{prefix}{name} - {what} ({code})"
        body = [shown[k] for k in ("time", "evidence", "address", "link") if shown[k]]
        return "\n".join([head, *body, ack])

    name = _name(ctx.elder_name)
    label = "地址：" if lang == "zh" else "Address: "

    def with_address(kept: dict[str, str]) -> Callable[[str], str]:
        return lambda cut: build(name, {**kept, "address": label + cut})

    # Parts give way in ``order``; at each step a cut address is tried before none.
    order = _GIVE_WAY_WHERE_MATTERS if ctx.kind in _WHERE_MATTERS else _GIVE_WAY
    kept = parts
    for n in range(len(order) + 1):
        kept = {k: ("" if k in order[:n] else v) for k, v in parts.items()}
        text = build(name, kept)
        if sms_segments(text) <= MAX_SEGMENTS:
            return text
        if kept["address"]:
            cut = _longest_fit(with_address(kept), address, _ellipsis(lang))
            if cut is not None and len(cut) >= 8:
                return build(name, {**kept, "address": label + cut})
    return _fit(lambda n: build(n, kept), name)


# What gives way when a page is too long. A map link is as long as the rest of a Chinese
# text, so it goes first, except where the place is the news (the elder left the safe
# zone): there the evidence and the address go first.
_GIVE_WAY: tuple[str, ...] = ("link", "evidence", "address", "time")
_GIVE_WAY_WHERE_MATTERS: tuple[str, ...] = ("evidence", "address", "link", "time")
_WHERE_MATTERS = frozenset({"geofence_exit"})


def _evidence(ctx: MessageContext, lang: Language, *, spoken: bool) -> str:
    """The one measurement that made this alert, if the detector recorded it."""
    ev = ctx.evidence
    zh = lang == "zh"
    order = _EVIDENCE_FIRST.get(ctx.kind, ()) + _EVIDENCE_ANY
    for key in order:
        if key == "bp":
            sys_, dia = _number(ev.get("systolic")), _number(ev.get("diastolic"))
            if sys_ is None or dia is None:
                continue
            if spoken:
                return f"血压 高压 {sys_}，低压 {dia}" if zh else f"blood pressure {sys_} over {dia}"
            return f"血压 {sys_}/{dia} mmHg" if zh else f"BP {sys_}/{dia} mmHg"
        value = _number(ev.get(key))
        if value is None:
            continue
        zh_text, en_text = _EVIDENCE_TEXT[key]
        if spoken:
            zh_text, en_text = _SPOKEN.get(key, (zh_text, en_text))
        return (zh_text if zh else en_text).format(value)
    return ""


_EVIDENCE_FIRST: dict[str, tuple[str, ...]] = {
    "hypoglycaemia": ("glucose",),
    "hyperglycaemia": ("glucose",),
    "hypertensive_crisis": ("bp",),
    "hypotension": ("bp",),
    "hr_high": ("hr",),
    "hr_low": ("hr",),
    "spo2_low": ("spo2",),
    "low_battery": ("battery_pct",),
    "geofence_exit": ("metres_outside",),
    "fall_no_recovery": ("no_movement_for_s",),
    "device_silent": ("silent_for_s",),
    "inactivity": ("hours_without_movement",),
}
_EVIDENCE_ANY: tuple[str, ...] = ("glucose", "bp", "spo2", "hr", "battery_pct", "metres_outside")
_EVIDENCE_TEXT: dict[str, tuple[str, str]] = {
    "glucose": ("血糖 {} mmol/L", "Glucose {} mmol/L"),
    "hr": ("心率 {} 次/分", "Heart rate {} bpm"),
    "spo2": ("血氧 {}%", "SpO2 {}%"),
    "battery_pct": ("电量 {}%", "Battery {}%"),
    "metres_outside": ("已离开安全区 {} 米", "{} m outside the safe zone"),
    "no_movement_for_s": ("跌倒后 {} 秒无活动", "No movement for {} s after the fall"),
    "silent_for_s": ("已 {} 秒无数据", "No data for {} s"),
    "hours_without_movement": ("已 {} 小时无活动", "No movement for {} h"),
}
_SPOKEN: dict[str, tuple[str, str]] = {
    "glucose": ("血糖 {}", "blood sugar {}"),
    "hr": ("心率每分钟 {} 次", "heart rate {} per minute"),
    "spo2": ("血氧百分之 {}", "blood oxygen {} percent"),
    "battery_pct": ("电量百分之 {}", "battery {} percent"),
    "metres_outside": ("已离开安全区 {} 米", "{} metres outside the safe zone"),
    "no_movement_for_s": ("跌倒后 {} 秒无活动", "no movement for {} seconds after the fall"),
    "silent_for_s": ("已 {} 秒无数据", "no data for {} seconds"),
    "hours_without_movement": ("已 {} 小时无活动", "no movement for {} hours"),
}


def _spoken_alert(ctx: MessageContext, lang: Language) -> str:
    name, what, code = _name(ctx.elder_name, 40), kind_name(ctx.kind, lang), _clean(ctx.alert_code)
    local = _local(ctx.when_ms)
    evidence = _evidence(ctx, lang, spoken=True)
    address = _cut(_clean(ctx.address), 80, _ellipsis(lang))
    family = ctx.role == "family"
    if lang == "zh":
        parts = [
            f"这里是社区养老紧急呼叫。{'您的家人' if family else ''}{name}，{what}",
            f"时间 {local.hour}点{local.minute:02d}分",
        ]
        parts += [evidence] if evidence else []
        parts += [f"地址 {address}"] if address else []
        return "，".join(parts) + f"。告警编号 {code}。确认处理请按 1，转给下一位请按 2。"
    parts = [
        f"This is the community eldercare alert line. {'Your family member ' if family else ''}{name}: {what}",
        f"at {local.hour}:{local.minute:02d}",
    ]
    parts += [evidence] if evidence else []
    parts += [f"address {address}"] if address else []
    return ", ".join(parts) + f". Alert code {code}. Press 1 to take it, press 2 to pass it on."


# --- small helpers --------------------------------------------------------------------------------


def _say(parent: ET.Element, text: str, lang: Language, voice: str | None) -> None:
    attrs = {"language": SAY_LANGUAGE[lang]}
    if voice:
        attrs["voice"] = _clean_xml(voice)
    ET.SubElement(parent, "Say", attrs).text = _clean_xml(text)


def _fit(build: Callable[[str], str], name: str) -> str:
    """``build(name)``, with the name shortened only if nothing else can give way."""
    text = build(name)
    if sms_segments(text) <= MAX_SEGMENTS:
        return text
    cut = _longest_fit(build, name, "…")
    return build(cut) if cut is not None else _cut(text, 67 * MAX_SEGMENTS, "…")


def _longest_fit(build: Callable[[str], str], value: str, ellipsis: str) -> str | None:
    """The longest prefix of ``value`` (plus ``ellipsis``) for which ``build`` fits; segments
    grow monotonically with the prefix, so a binary search finds it."""
    lo, hi, best = 1, len(value) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        candidate = value[:mid].rstrip() + ellipsis
        if sms_segments(build(candidate)) <= MAX_SEGMENTS:
            best, lo = candidate, mid + 1
        else:
            hi = mid - 1
    return best


def _clean_xml(text: str) -> str:
    return _XML_ILLEGAL.sub("", text)


def _clean(text: str | None) -> str:
    """One line of printable text: no control characters, whitespace runs as one space."""
    return _WHITESPACE.sub(" ", _clean_xml(text or "")).strip()


def _name(name: str | None, limit: int = 30) -> str:
    return _cut(_clean(name), limit, "…") or "?"


def _cut(text: str, limit: int, ellipsis: str) -> str:
    return text if len(text) <= limit else text[: limit - len(ellipsis)].rstrip() + ellipsis


def _ellipsis(lang: Language) -> str:
    return "…" if lang == "zh" else "..."  # "…" is not GSM-7: it would turn an English text into UCS-2


def _number(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    rounded = round(float(value), 1)
    return str(int(rounded)) if rounded.is_integer() else f"{rounded:.1f}"


def _local(when_ms: int) -> datetime:
    return datetime.fromtimestamp(when_ms / 1000, SHANGHAI)


def _when(when_ms: int, lang: Language) -> str:
    t = _local(when_ms)
    if lang == "zh":
        return f"{t.month}月{t.day}日 {t.hour:02d}:{t.minute:02d}"
    return f"{t.day} {_MONTHS[t.month - 1]} {t.hour:02d}:{t.minute:02d}"


def _map_link(lat: float | None, lon: float | None) -> str:
    """An Amap marker; the gateway's positions are WGS-84 (GPS), which Amap must be told."""
    if lat is None or lon is None or not (math.isfinite(lat) and math.isfinite(lon)):
        return ""
    return f"https://uri.amap.com/marker?position={lon:.5f},{lat:.5f}&coordinate=wgs84"


def _outcome(outcome: str | None, lang: Language) -> str:
    names = OUTCOME_NAMES.get(outcome or "", OUTCOME_NAMES["other"])
    return names[0] if lang == "zh" else names[1]


def _severity_rank(severity: str) -> int:
    return {"critical": 2, "warning": 1}.get(severity, 0)
