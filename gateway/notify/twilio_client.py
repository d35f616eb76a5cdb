"""The real ``twilio`` client, async, optionally pointed at another base URL.

Tests and the demo point it at the local fake (``simulators.providers.twilio``); in
production ``base_url`` stays None and requests go to Twilio.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from gateway.notify.base import NotifyError, RetryableError, classify_http, redact_phone

T = TypeVar("T")
_PHONE = re.compile(r"\+\d{7,15}")


@dataclass(frozen=True, slots=True)
class TwilioSettings:
    account_sid: str
    auth_token: str
    sms_from: str
    voice_from: str
    base_url: str | None = None
    timeout_s: float = 10.0

    def __repr__(self) -> str:  # the token must never reach a log line
        return f"TwilioSettings(account_sid={self.account_sid!r}, base_url={self.base_url!r}, token=***)"


def make_client(settings: TwilioSettings) -> Client:
    client = Client(
        settings.account_sid, settings.auth_token, http_client=AsyncTwilioHttpClient(timeout=settings.timeout_s)
    )
    if settings.base_url:
        client.api.base_url = settings.base_url.rstrip("/")
    return client


class TwilioChannel:
    """What the SMS and voice senders share: one client, a time limit, error translation."""

    name = "twilio"

    def __init__(self, settings: TwilioSettings) -> None:
        self.settings = settings
        self.client = make_client(settings)

    async def guarded(self, request: Awaitable[T]) -> T:
        """Await a Twilio request within the time limit (the async client sets none itself)."""
        try:
            async with asyncio.timeout(self.settings.timeout_s + 2):
                return await request
        except asyncio.CancelledError:
            raise
        except BaseException as error:
            raise translate(error) from None

    async def close(self) -> None:
        close = getattr(self.client.http_client, "close", None)
        if close is not None:
            await close()


def translate(error: BaseException) -> NotifyError:
    """Any failure of a Twilio call as our retryable/permanent error."""
    if isinstance(error, NotifyError):
        return error
    if isinstance(error, TwilioRestException):
        # Twilio's messages quote the number ("The 'To' number +86... is not valid"): keep it out of logs
        text = _PHONE.sub(lambda m: redact_phone(m.group(0)), str(error.msg))
        return classify_http(error.status, error.code, f"twilio {error.status} {error.code}: {text}")
    if isinstance(error, TimeoutError | asyncio.TimeoutError):
        return RetryableError("twilio request timed out")
    return RetryableError(f"twilio request failed: {type(error).__name__}: {error}")
