"""SMS through Twilio's Messages API."""

from __future__ import annotations

import asyncio

from gateway.notify.base import Outbound, Sent
from gateway.notify.twilio_client import TwilioSettings, make_client, translate


class TwilioSms:
    name = "twilio"
    channels = frozenset({"sms"})

    def __init__(self, settings: TwilioSettings) -> None:
        self.settings = settings
        self.client = make_client(settings)

    async def send(self, message: Outbound) -> Sent:
        try:
            async with asyncio.timeout(self.settings.timeout_s + 2):
                sent = await self.client.messages.create_async(
                    to=message.phone, from_=self.settings.sms_from, body=message.text,
                    status_callback=message.callback_url or None,
                )
        except asyncio.CancelledError:
            raise
        except BaseException as error:
            raise translate(error) from None
        return Sent(str(sent.sid), self.name)

    async def close(self) -> None:
        http = self.client.http_client
        close = getattr(http, "close", None)
        if close is not None:
            await close()
