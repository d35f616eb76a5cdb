"""The values China's providers put into their registered templates, and the check of a template map.

Aliyun and Tencent send only a template registered (and reviewed) in advance, filled
with parameters; free text is refused. The operator registers templates worded as
they like and maps each parameter to one of the gateway's fields (``FIELDS``). The map
is checked when the configuration loads, so a missing template is a start-up error
naming it, not a page that fails at 3 a.m.

Values are cut to ``MAX_VALUE`` characters (both providers limit a parameter's length)
and an empty value is sent as "-" (an empty parameter is refused by both).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from gateway.notify.templates import (
    KIND_NAMES,
    MessageContext,
    _clean,
    _cut,
    _local,
    _name,
    _outcome,
    _severity_rank,
    kind_name,
    language_for,
)

SMS_PURPOSES = ("page", "taken", "retraction", "resolved", "summary")
VOICE_KEYS = ("page", "key1", "key2")  # what the call says; after 1 (taken); after 2 (passed on)
MAX_VALUE = 20
FIELDS: dict[str, str] = {
    "elder": "the elder's name",
    "kind": "what happened (跌倒, 紧急呼叫 ...)",
    "severity": "紧急 / 警告 / 提示",
    "code": "the alert code people quote back (A17)",
    "time": "when it opened, Asia/Shanghai (12-03 20:07)",
    "address": "the elder's address, cut to 20 characters",
    "taken_by": "who took it (taken, resolved)",
    "outcome": "how it ended (resolved)",
    "count": "how many alerts (summary)",
    "codes": "their codes, most severe first (summary)",
}
_SEVERITY = {"critical": "紧急", "warning": "警告", "info": "提示"}


class Template(Protocol):
    @property
    def template(self) -> str: ...
    @property
    def params(self) -> dict[str, str]: ...


def fields(contexts: Sequence[MessageContext]) -> dict[str, str]:
    """Every field for one alert (or, for a summary, several), as the template parameters take them."""
    first = sorted(contexts, key=lambda c: (-_severity_rank(c.severity), c.when_ms))[0]
    lang = language_for(first.recipient_language)
    when = _local(first.when_ms)
    values = {
        "elder": _name(first.elder_name, MAX_VALUE),
        "kind": kind_name(first.kind, lang),
        "severity": _SEVERITY.get(first.severity, first.severity),
        "code": _clean(first.alert_code),
        "time": f"{when.month:02d}-{when.day:02d} {when.hour:02d}:{when.minute:02d}",
        "address": _cut(_clean(first.address), MAX_VALUE, "…"),
        "taken_by": _name(first.taken_by, MAX_VALUE) if _clean(first.taken_by) else "",
        "outcome": _outcome(first.outcome, lang) if first.outcome else "",
        "count": str(len(contexts)),
        "codes": _cut(
            "、".join(_clean(c.alert_code) for c in sorted(contexts, key=lambda c: -_severity_rank(c.severity))),
            MAX_VALUE,
            "…",
        ),
    }
    return {k: v or "-" for k, v in values.items()}


def pick(templates: Mapping[str, Template], purpose: str, kind: str) -> Template:
    """The template for this purpose and kind of alert (``page.fall`` before ``page``)."""
    return templates.get(f"{purpose}.{kind}") or templates[purpose]


def named_params(template: Template, values: Mapping[str, str]) -> dict[str, str]:
    """Aliyun: {parameter name: value}."""
    return {param: values[field] for param, field in template.params.items()}


def numbered_params(template: Template, values: Mapping[str, str]) -> list[str]:
    """Tencent: the values in the order of the template's {1}, {2} ..."""
    return [values[template.params[k]] for k in sorted(template.params, key=int)]


def check_templates(
    sms: Mapping[str, Template], voice: Mapping[str, Template], *, needs_voice: bool, numbered: bool
) -> str | None:
    """What is wrong with a provider's template map (the key first), or None."""
    for purpose in SMS_PURPOSES:
        if purpose not in sms:
            return f"sms_templates: no template for {purpose!r} (each of {', '.join(SMS_PURPOSES)} needs one)"
    if needs_voice and "page" not in voice:
        return "voice_templates: no template for 'page' (what the call says)"
    for section, table, allowed in (("sms_templates", sms, SMS_PURPOSES), ("voice_templates", voice, VOICE_KEYS)):
        for key, template in table.items():
            purpose, _, kind = key.partition(".")
            if purpose not in allowed or (kind and kind not in KIND_NAMES):
                return f"{section}.{key}: not a purpose ({', '.join(allowed)}) or purpose.kind"
            if not template.template.strip():
                return f"{section}.{key}.template: empty"
            for param, field in template.params.items():
                if field not in FIELDS:
                    return f"{section}.{key}.params.{param}: unknown field {field!r} (one of {', '.join(FIELDS)})"
                if numbered and not param.isdigit():
                    return f"{section}.{key}.params.{param}: Tencent numbers its parameters (1, 2 ...)"
    return None
