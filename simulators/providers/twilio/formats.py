"""Twilio's validation rules and formats: numbers, request problems with their error codes, SIDs, dates."""

from __future__ import annotations

import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

from aiohttp import web

from simulators.providers.twilio.records import ALPHANUMERIC_SENDER, CN_NATIONAL, E164, MESSAGING_SERVICE, R


def is_plausible_number(number: str) -> bool:
    """E.164, and for China (+86) and NANP (+1) the right national length."""
    if not E164.fullmatch(number):
        return False
    if number.startswith("+86"):
        return bool(CN_NATIONAL.fullmatch(number[3:]))
    if number.startswith("+1"):
        return len(number) == 12 and number[2] not in "01"
    return True


def message_problem(
    to: str, from_: str, body: str, service: str | None, callback: str | None
) -> tuple[int, str] | None:
    if not to:
        return 21604, "A 'To' phone number is required."
    if not is_plausible_number(to):
        return 21211, f"The 'To' number {to} is not a valid phone number."
    if not from_ and not service:
        return 21603, "A 'From' phone number is required."
    if from_ and not (is_plausible_number(from_) or ALPHANUMERIC_SENDER.fullmatch(from_)):
        return 21212, f"The 'From' number {from_} is not a valid phone number, shortcode, or alphanumeric ID."
    if service and not MESSAGING_SERVICE.fullmatch(service):
        return 21701, f"The Messaging Service Sid {service} is invalid."
    if to == from_:
        return 21266, "'To' and 'From' number cannot be the same"
    if not body:
        return 21602, "Message body is required."
    if len(body) > 1600:
        return 21617, "The concatenated message body exceeds the 1600 character limit."
    if callback is not None and not is_url(callback):
        return 21609, f"The StatusCallback URL {callback} is not a valid URL."
    return None


def call_problem(
    to: str, from_: str, twiml: str | None, url: str | None, callback: str | None
) -> tuple[int, str] | None:
    if not to:
        return 21201, "No 'To' number is specified"
    if not is_plausible_number(to):
        return 21211, f"The 'To' number {to} is not a valid phone number."
    if not from_:
        return 21213, "No 'From' number is specified"
    if not is_plausible_number(from_):
        return 21212, f"The 'From' number {from_} is not a valid phone number."
    if to == from_:
        return 21266, "'To' and 'From' number cannot be the same"
    if twiml is None and url is None:
        return 21205, "Either a 'Url' or a 'Twiml' parameter is required."
    if url is not None and not is_url(url):
        return 21205, f"Url is not a valid URL: {url}"
    if twiml is not None:
        try:
            root = ET.fromstring(twiml)
        except ET.ParseError as error:
            return 12100, f"Document parse failure: {error}"
        if root.tag != "Response":
            return 12100, "Document parse failure: the root element must be <Response>"
    if callback is not None and not is_url(callback):
        return 21609, f"The StatusCallback URL {callback} is not a valid URL."
    return None


def gather_of(twiml: str, base: str | None) -> tuple[str | None, str]:
    """The action URL and method of the first ``<Gather>``, resolved against ``base``."""
    gather = ET.fromstring(twiml).find(".//Gather")
    if gather is None or not gather.get("action"):
        return None, "POST"
    action = gather.get("action", "")
    action = urljoin(base, action) if base else action
    return (action if is_url(action) else None), gather.get("method", "POST").upper()


def is_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and "_" not in (parts.hostname or "")


def twilio_error(status: int, code: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """Twilio's error body; ``twilio`` turns it into ``TwilioRestException(status, code, msg)``."""
    return web.json_response(
        {"code": code, "message": message, "status": status, "more_info": f"https://www.twilio.com/docs/errors/{code}"},
        status=status,
        headers=dict(headers or {}),
    )


def form_field(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def at_least(n: int, found: Callable[[], list[R]]) -> Callable[[], list[R] | None]:
    def check() -> list[R] | None:
        items = found()
        return items if len(items) >= n else None

    return check


def sign_mode(unsigned: bool, bad_signature: bool) -> Literal["valid", "missing", "wrong"]:
    return "missing" if unsigned else "wrong" if bad_signature else "valid"


def new_sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def rfc2822() -> str:
    return format_datetime(datetime.now(UTC))
