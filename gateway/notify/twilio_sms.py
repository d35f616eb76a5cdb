"""SMS through Twilio's Messages API."""

from __future__ import annotations

from gateway.notify.base import Outbound, Sent
from gateway.notify.twilio_client import TwilioChannel


class TwilioSms(TwilioChannel):
    channels = frozenset({"sms"})

    async def send(self, message: Outbound) -> Sent:
        sent = await self.guarded(
            self.client.messages.create_async(
                to=message.phone,
                from_=self.settings.sms_from,
                body=message.text,
                status_callback=message.callback_url or None,
            )
        )
        return Sent(str(sent.sid), self.name)
