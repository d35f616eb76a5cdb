"""Voice calls through Twilio's Calls API: the alert is read out, a key press answers it.

The TwiML goes inline with the call request, so the call needs no second fetch; the
``<Gather>`` in it posts the key press to our signed webhook.
"""

from __future__ import annotations

from gateway.notify.base import Outbound, PermanentError, Sent
from gateway.notify.twilio_client import TwilioChannel

CALL_EVENTS = ["initiated", "ringing", "answered", "completed"]


class TwilioVoice(TwilioChannel):
    channels = frozenset({"voice"})

    async def send(self, message: Outbound) -> Sent:
        if not message.twiml:
            raise PermanentError("a voice notification needs TwiML")
        call = await self.guarded(
            self.client.calls.create_async(
                to=message.phone,
                from_=self.settings.voice_from,
                twiml=message.twiml,
                status_callback=message.callback_url or None,
                status_callback_event=CALL_EVENTS if message.callback_url else None,
                timeout=25,
            )
        )
        return Sent(str(call.sid), self.name)
