"""A generic signed webhook, for a hotline's call-centre system, and a console notifier.

The webhook POSTs JSON and signs the exact body with HMAC-SHA256 under a shared
secret (header ``X-Eldercare-Signature: sha256=<hex>``), so the receiver can check
it came from us and was not altered.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging

from gateway.notify.base import Outbound, PermanentError, RetryableError, Sent, classify_http

log = logging.getLogger(__name__)


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class SignedWebhook:
    name = "webhook"
    channels = frozenset({"webhook"})

    def __init__(self, url: str, secret: str, timeout_s: float = 10.0) -> None:
        self.url = url
        self.secret = secret
        self.timeout_s = timeout_s
        import aiohttp  # here, not at the top: a gateway without a webhook never imports it (~0.1 s)

        self._aiohttp = aiohttp

    async def send(self, message: Outbound) -> Sent:
        aiohttp = self._aiohttp
        body = json.dumps(
            {
                "notification_id": message.notification_id,
                "alert_id": message.alert_id,
                "purpose": message.purpose,
                "recipient": message.recipient_name,
                "phone": message.phone,
                "language": message.language,
                "text": message.text,
            },
            ensure_ascii=False,
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Eldercare-Signature": sign(self.secret, body),
            "Idempotency-Key": f"eldercare-{message.notification_id}",
        }
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as session,
                session.post(self.url, data=body, headers=headers) as response,
            ):
                if response.status >= 300:
                    raise classify_http(response.status, None, f"webhook answered {response.status}")
        except (RetryableError, PermanentError):
            raise
        except (TimeoutError, aiohttp.ClientError) as error:
            raise RetryableError(f"webhook unreachable: {type(error).__name__}") from None
        return Sent(f"webhook-{message.notification_id}", self.name)

    async def close(self) -> None:
        return None


class ConsoleNotifier:
    """Development: write what would be sent to the log (and keep it for inspection)."""

    name = "console"
    channels = frozenset({"sms", "voice", "console"})

    def __init__(self) -> None:
        self.sent: list[Outbound] = []

    async def send(self, message: Outbound) -> Sent:
        self.sent.append(message)
        log.info("[%s to %s] %s", message.channel, message.recipient_name, message.text)
        return Sent(f"console-{message.notification_id}", self.name)

    async def close(self) -> None:
        return None
