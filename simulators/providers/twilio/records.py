"""What the fake Twilio records and the vocabulary of its behaviour (failure modes, outcomes)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeVar

log = logging.getLogger("simulators.providers.twilio")
T = TypeVar("T")
R = TypeVar("R")
FailureMode = Literal["http500", "http429", "timeout", "invalid_number", "blocked"]
FAILURE_MODES: tuple[FailureMode, ...] = ("http500", "http429", "timeout", "invalid_number", "blocked")
CallOutcome = Literal["answered", "no-answer", "busy", "failed"]
DeliveryOutcome = Literal["delivered", "undelivered", "failed"]
Api = Literal["messages", "calls"]
WebhookKind = Literal["message_status", "call_status", "gather", "incoming_sms"]
API_VERSION = "2010-04-01"
USER_AGENT = "TwilioProxy/1.1"
E164 = re.compile(r"\+[1-9]\d{6,14}")
CN_NATIONAL = re.compile(r"1[3-9]\d{9}|[2-9]\d{8,10}")  # mobile, or area code + local number
ALPHANUMERIC_SENDER = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}")
MESSAGING_SERVICE = re.compile(r"MG[0-9a-f]{32}")
DEFAULT_ERROR = {"undelivered": 30003, "failed": 30008}  # unreachable handset / unknown error
REFUSALS: dict[str, tuple[int, int, str]] = {
    "http500": (500, 20500, "An internal server error has occurred"),
    "http429": (429, 20429, "Too Many Requests"),
    "invalid_number": (400, 21211, "The 'To' number {to} is not a valid phone number."),
    "blocked": (400, 21610, "Attempt to send to unsubscribed recipient"),
}


class FakeTwilioError(Exception):
    """The test asked the fake for something Twilio could not do (press a key on a call
    that was never answered, on an unknown call, ...)."""


@dataclass(frozen=True, slots=True)
class SentMessage:
    """One request to the Messages API as it arrived, accepted or not."""

    sid: str | None  # None when refused
    to: str
    from_: str
    body: str
    status_callback: str | None
    messaging_service_sid: str | None
    received_at_ms: int  # wall clock
    received_monotonic: float
    outcome: str  # "queued" when accepted; else a FailureMode, "auth_failed" or "bad_request"
    http_status: int  # the API's answer; 0 while a "timeout" request is held open
    error_code: int | None = None

    @property
    def accepted(self) -> bool:
        return self.outcome == "queued"


@dataclass(frozen=True, slots=True)
class PlacedCall:
    """One request to the Calls API as it arrived, accepted or not."""

    sid: str | None
    to: str
    from_: str
    twiml: str | None
    url: str | None
    status_callback: str | None
    status_callback_events: tuple[str, ...]
    gather_action: str | None  # the <Gather action> of the TwiML, resolved against Url
    received_at_ms: int
    received_monotonic: float
    outcome: str
    http_status: int
    error_code: int | None = None

    @property
    def accepted(self) -> bool:
        return self.outcome == "queued"


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One request the fake made to the gateway, and what the gateway answered."""

    kind: WebhookKind
    url: str  # as requested (for GET, with the parameters in the query)
    method: str
    params: Mapping[str, str]
    signature: str | None  # the X-Twilio-Signature header sent; None: unsigned
    idempotency_token: str  # I-Twilio-Idempotency-Token, the same on a redelivery
    status: int  # the gateway's HTTP status; 0 if it could not be reached
    body: str
    error: str | None  # why the gateway could not be reached
    sent_at_ms: int
    sent_monotonic: float
    redelivery: bool = False


@dataclass(eq=False)
class LiveCall:
    record: PlacedCall
    outcome: CallOutcome
    press: str | None
    gather_action: str | None
    gather_method: str
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    hangup: asyncio.Event = field(default_factory=asyncio.Event)
    ended: bool = False
