"""The fake's records, behaviour settings and plumbing, shared by every part of it."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Mapping
from typing import Any, Literal

from aiohttp import ClientSession, web
from twilio.request_validator import RequestValidator

from simulators.providers.twilio.records import (
    Api,
    CallOutcome,
    DeliveryOutcome,
    FailureMode,
    LiveCall,
    PlacedCall,
    SentMessage,
    T,
    WebhookDelivery,
    WebhookKind,
    log,
)


class FakeState:
    """The fake's records, behaviour settings and plumbing, shared by every part of it."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        step_s: float = 0.05,
        answered_call_s: float = 10.0,
        hold_s: float = 30.0,
        webhook_s: float = 15.0,
    ) -> None:
        self.account_sid = account_sid
        self.step_s = step_s
        self.answered_call_s = answered_call_s
        self.hold_s = hold_s
        self.webhook_s = webhook_s  # how long the fake waits for the gateway to answer a webhook
        self._token = auth_token.encode()
        self._validator = RequestValidator(auth_token)
        self._forger = RequestValidator(auth_token[::-1] + "-forged")
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._async_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._messages: list[SentMessage] = []
        self._calls: list[PlacedCall] = []
        self._webhooks: list[WebhookDelivery] = []
        self._status: dict[str, str] = {}
        self._live: dict[str, LiveCall] = {}
        self._fail_next: list[tuple[FailureMode, Api | None]] = []
        self._fail_window: tuple[float, FailureMode, Api | None] | None = None
        self._fail_numbers: dict[str, FailureMode] = {}
        self._answers: dict[str, tuple[CallOutcome, str | None]] = {}
        self._deliveries: dict[str, tuple[DeliveryOutcome, int | None]] = {}
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._session: ClientSession | None = None
        self._stopping: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._base_url = ""

    def _append(self, target: list[Any], item: object) -> None:
        with self._lock:
            target.append(item)
        self._changed()

    def _set_status(self, sid: str, status: str) -> None:
        with self._lock:
            self._status[sid] = status
        self._changed()

    def _changed(self) -> None:
        """Wake every waiter, sync or async, on whichever loop it waits."""
        with self._cond:
            self._cond.notify_all()
            waiters = list(self._async_waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(event.set)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("fake Twilio task %s failed", task.get_name(), exc_info=task.exception())

    async def _on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the server's loop (call state and the HTTP session live there)."""
        try:
            loop = self.loop
        except RuntimeError:
            coro.close()
            raise
        if asyncio.get_running_loop() is loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the fake is not running")
        return self._loop

    # --- what one part asks of another (defined in progress, behaviour and people) ----------------

    async def _run_message(self, msg: SentMessage) -> None:
        raise NotImplementedError

    async def _run_call(self, live: LiveCall) -> None:
        raise NotImplementedError

    def _take_failure(self, api: Api, to: str) -> FailureMode | None:
        raise NotImplementedError

    async def _webhook(
        self,
        kind: WebhookKind,
        url: str,
        params: Mapping[str, str],
        *,
        method: str = "POST",
        sign: Literal["valid", "missing", "wrong"] = "valid",
    ) -> WebhookDelivery:
        raise NotImplementedError

    async def _press_key(self, call_sid: str, digits: str, unsigned: bool, bad_signature: bool) -> WebhookDelivery:
        raise NotImplementedError
