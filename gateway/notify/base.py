"""The one interface every notifier implements, and the one place failures are classified.

Exceptions (the whole tree)::

    NotifyError                 a send did not happen; carries ``retryable`` and ``code``
    ├── RetryableError          try again later (5xx, 429, timeout, connection refused)
    └── PermanentError          do not retry this channel (invalid number, blocked, 4xx)

Each SMS/voice provider (Twilio, Aliyun, Tencent Cloud) is a module with a class that
has ``name``, ``channels`` and ``send``; the outbox orders them per recipient
(``gateway.notify.routing``) and fails over to the next.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

Channel = Literal["sms", "voice", "webhook", "console"]


class NotifyError(Exception):
    """A send failed; ``retryable`` says whether the same channel may be tried again."""

    retryable = False

    def __init__(self, message: str, *, code: int | str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class RetryableError(NotifyError):
    retryable = True


class PermanentError(NotifyError):
    retryable = False


@dataclass(frozen=True, slots=True)
class Outbound:
    """One message to one person on one channel, as stored in the outbox."""

    notification_id: int
    alert_id: int
    purpose: str
    channel: Channel
    phone: str
    language: str
    recipient_name: str
    text: str  # SMS body, or what the call reads
    twiml: str | None = None  # voice only
    callback_url: str | None = None  # delivery/call status callback
    kind: str = ""  # the alert's kind: China's providers pick a template by it
    summary: bool = False  # several alerts in one SMS
    fields: dict[str, str] = field(default_factory=dict)  # template parameters (gateway.notify.template_fields)


@dataclass(frozen=True, slots=True)
class Sent:
    """The provider accepted the message; ``provider_sid`` identifies it in callbacks."""

    provider_sid: str
    provider: str


class Notifier(Protocol):
    name: str
    channels: frozenset[str]

    async def send(self, message: Outbound) -> Sent:
        """Send or raise ``RetryableError`` / ``PermanentError``; never anything else."""
        ...

    async def close(self) -> None:
        """Release connections (called once, at shutdown)."""
        ...


def classify_http(status: int | None, code: int | str | None, message: str) -> NotifyError:
    """HTTP status (and provider error code) -> retryable or permanent, in one place.

    408, 425, 429 and every 5xx are worth another try; other 4xx are the request's
    own fault (a bad number, a blocked recipient) and repeating them changes nothing.
    A missing status means the request never completed (timeout, connection reset).
    """
    if status is None or status in (408, 425, 429) or status >= 500:
        return RetryableError(message, code=code, status=status)
    return PermanentError(message, code=code, status=status)


def redact_phone(phone: str) -> str:
    """+8613812345678 -> +86138****5678: enough to tell people apart in a log, no more."""
    if len(phone) < 8:
        return "***"
    return phone[:6] + "****" + phone[-4:]
