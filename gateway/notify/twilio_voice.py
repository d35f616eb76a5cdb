"""Voice calls through Twilio's Calls API: the alert is read out, a key press answers it.

The TwiML goes inline with the call request, so the call needs no second fetch; the
``<Gather>`` in it posts the key press to our signed webhook.
"""

from __future__ import annotations

import asyncio

from gateway.notify.base import Outbound, PermanentError, Sent
from gateway.notify.twilio_client import TwilioSettings, make_client, translate

CALL_EVENTS = ["initiated", "ringing", "answered", "completed"]


class TwilioVoice:
    name = "twilio"
    channels = frozenset({"voice"})

    def __init__(self, settings: TwilioSettings) -> None:
        self.settings = settings
        self.client = make_client(settings)

    async def send(self, message: Outbound) -> Sent:
        if not message.twiml:
            raise PermanentError("a voice notification needs TwiML")
        try:
            async with asyncio.timeout(self.settings.timeout_s + 2):
                call = await self.client.calls.create_async(
                    to=message.phone, from_=self.settings.voice_from, twiml=message.twiml,
                    status_callback=message.callback_url or None,
                    status_callback_event=CALL_EVENTS if message.callback_url else None,
                    timeout=25,
                )
        except asyncio.CancelledError:
            raise
        except BaseException as error:
            raise translate(error) from None
        return Sent(str(call.sid), self.name)

    async def close(self) -> None:
        http = self.client.http_client
        close = getattr(http, "close", None)
        if close is not None:
            await close()
