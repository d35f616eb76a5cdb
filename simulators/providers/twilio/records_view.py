"""What happened, read from any thread, and waiting for it without polling."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from simulators.providers.twilio.formats import at_least
from simulators.providers.twilio.records import PlacedCall, SentMessage, T, WebhookDelivery, WebhookKind
from simulators.providers.twilio.state import FakeState


class RecordsView(FakeState):
    """What happened, read from any thread, and waiting for it without polling."""

    @property
    def messages(self) -> list[SentMessage]:
        with self._lock:
            return list(self._messages)

    @property
    def calls(self) -> list[PlacedCall]:
        with self._lock:
            return list(self._calls)

    @property
    def webhooks(self) -> list[WebhookDelivery]:
        with self._lock:
            return list(self._webhooks)

    def status_of(self, sid: str) -> str | None:
        """The current status of a message or call (queued, sent, delivered, ringing, ...)."""
        with self._lock:
            return self._status.get(sid)

    async def wait_until(self, check: Callable[[], T | None], timeout_s: float = 5.0, what: str = "condition") -> T:
        """Wait, from any loop, until ``check()`` returns something truthy; re-checked on
        every change to the records, so there is no polling delay."""
        event = asyncio.Event()
        waiter = (asyncio.get_running_loop(), event)
        with self._lock:
            self._async_waiters.add(waiter)
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    event.clear()
                    result = check()
                    if result:
                        return result
                    await event.wait()
        except TimeoutError:
            raise TimeoutError(f"fake Twilio: no {what} within {timeout_s} s") from None
        finally:
            with self._lock:
                self._async_waiters.discard(waiter)

    def wait_until_sync(self, check: Callable[[], T | None], timeout_s: float = 5.0, what: str = "condition") -> T:
        """``wait_until`` for threads without a loop (the server must run in another thread)."""
        if threading.current_thread() is self._loop_thread:
            raise RuntimeError("wait_until_sync would block the fake's own loop; await wait_until")
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                result = check()
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"fake Twilio: no {what} within {timeout_s} s")
                self._cond.wait(left)

    def _accepted_messages(self, accepted_only: bool) -> list[SentMessage]:
        return [m for m in self.messages if m.accepted or not accepted_only]

    def _accepted_calls(self, accepted_only: bool) -> list[PlacedCall]:
        return [c for c in self.calls if c.accepted or not accepted_only]

    def _webhooks_of(self, kind: WebhookKind | None) -> list[WebhookDelivery]:
        return [w for w in self.webhooks if kind is None or w.kind == kind]

    async def wait_for_messages(
        self, n: int, timeout_s: float = 5.0, *, accepted_only: bool = True
    ) -> list[SentMessage]:
        """At least ``n`` messages (accepted ones unless told otherwise), in arrival order."""
        return await self.wait_until(
            at_least(n, lambda: self._accepted_messages(accepted_only)), timeout_s, f"{n} messages"
        )

    async def wait_for_calls(self, n: int, timeout_s: float = 5.0, *, accepted_only: bool = True) -> list[PlacedCall]:
        return await self.wait_until(at_least(n, lambda: self._accepted_calls(accepted_only)), timeout_s, f"{n} calls")

    async def wait_for_webhooks(
        self, n: int, kind: WebhookKind | None = None, timeout_s: float = 5.0
    ) -> list[WebhookDelivery]:
        return await self.wait_until(
            at_least(n, lambda: self._webhooks_of(kind)), timeout_s, f"{n} {kind or ''} webhooks"
        )

    def wait_for_messages_sync(
        self, n: int, timeout_s: float = 5.0, *, accepted_only: bool = True
    ) -> list[SentMessage]:
        return self.wait_until_sync(
            at_least(n, lambda: self._accepted_messages(accepted_only)), timeout_s, f"{n} messages"
        )

    def wait_for_calls_sync(self, n: int, timeout_s: float = 5.0, *, accepted_only: bool = True) -> list[PlacedCall]:
        return self.wait_until_sync(at_least(n, lambda: self._accepted_calls(accepted_only)), timeout_s, f"{n} calls")

    def wait_for_webhooks_sync(
        self, n: int, kind: WebhookKind | None = None, timeout_s: float = 5.0
    ) -> list[WebhookDelivery]:
        return self.wait_until_sync(
            at_least(n, lambda: self._webhooks_of(kind)), timeout_s, f"{n} {kind or ''} webhooks"
        )
