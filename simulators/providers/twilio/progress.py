"""Accepted messages and calls move through Twilio's statuses and post their callbacks."""

from __future__ import annotations

import asyncio
import contextlib
import time

from simulators.providers.twilio.formats import rfc2822
from simulators.providers.twilio.records import API_VERSION, DEFAULT_ERROR, FakeTwilioError, LiveCall, SentMessage
from simulators.providers.twilio.state import FakeState


class Progress(FakeState):
    """Accepted messages and calls move through Twilio's statuses and post their callbacks."""

    async def _run_message(self, msg: SentMessage) -> None:
        assert msg.sid is not None
        with self._lock:
            outcome, code = self._deliveries.get(msg.to, ("delivered", None))
        for status in ("failed",) if outcome == "failed" else ("sent", outcome):
            await asyncio.sleep(self.step_s)
            self._set_status(msg.sid, status)
            if not msg.status_callback:
                continue
            params = {
                "MessageSid": msg.sid,
                "SmsSid": msg.sid,
                "MessageStatus": status,
                "SmsStatus": status,
                "AccountSid": self.account_sid,
                "From": msg.from_,
                "To": msg.to,
                "ApiVersion": API_VERSION,
            }
            if msg.messaging_service_sid:
                params["MessagingServiceSid"] = msg.messaging_service_sid
            if status in DEFAULT_ERROR:
                params["ErrorCode"] = str(code or DEFAULT_ERROR[status])
            await self._webhook("message_status", msg.status_callback, params)

    async def _run_call(self, live: LiveCall) -> None:
        rec = live.record
        assert rec.sid is not None
        sid = rec.sid
        wanted = set(rec.status_callback_events) or {"completed"}
        sequence = 0

        async def event(name: str, status: str, duration_s: int | None = None) -> None:
            nonlocal sequence
            self._set_status(sid, status)
            if not rec.status_callback or name not in wanted:
                return
            params = {
                "CallSid": sid,
                "AccountSid": self.account_sid,
                "From": rec.from_,
                "To": rec.to,
                "CallStatus": status,
                "Direction": "outbound-api",
                "ApiVersion": API_VERSION,
                "CallbackSource": "call-progress-events",
                "SequenceNumber": str(sequence),
                "Timestamp": rfc2822(),
            }
            if duration_s is not None:
                params["CallDuration"] = str(duration_s)
            sequence += 1
            await self._webhook("call_status", rec.status_callback, params)

        await asyncio.sleep(self.step_s)
        await event("initiated", "initiated")
        await asyncio.sleep(self.step_s)
        if live.outcome == "failed":
            live.ended = True
            await event("completed", "failed", 0)
            return
        await event("ringing", "ringing")
        await asyncio.sleep(self.step_s)
        if live.outcome in ("no-answer", "busy"):
            live.ended = True
            await event("completed", live.outcome, 0)
            return
        answered_at = time.monotonic()
        live.answered.set()
        await event("answered", "in-progress")
        if live.press and live.gather_action:
            await asyncio.sleep(self.step_s)
            with contextlib.suppress(FakeTwilioError):
                await self._press_key(sid, live.press, False, False)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(live.hangup.wait(), self.answered_call_s)
        live.ended = True
        await event("completed", "completed", max(1, round(time.monotonic() - answered_at)))
