"""What both China fakes share: an aiohttp server, what it records, injected failures, the people.

A fake accepts a send (after checking its signature), records it, and then plays the
person: a call is answered and a key pressed (``answer_as``), or not answered; an SMS
is delivered or not (``deliver_as``); a person may reply (``reply_sms``). Each outcome
reaches the gateway as the provider's receipt, POSTed to ``callback_base`` +
``/{provider}/{token}/...``. Every receipt posted is kept (``receipts``) and can be
posted again (``redeliver``) as the providers' retries do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import ClientSession, ClientTimeout, web

log = logging.getLogger("simulators.providers.china")

Api = Literal["sms", "voice"]
FailureMode = Literal["error", "busy_provider", "template", "timeout"]
CallOutcome = Literal["answered", "no_answer", "busy"]


@dataclass(frozen=True, slots=True)
class Sent:
    """One accepted (or refused) send, as the provider got it."""

    api: Api
    to: str  # as sent: Aliyun 13800000001, Tencent +8613800000001
    template: str
    params: Any  # Aliyun: dict; Tencent: list
    ours: str  # our id echoed back: Aliyun OutId, Tencent SessionContext
    sid: str  # the provider's id: Aliyun BizId / CallId, Tencent SerialNo / CallId
    sign_name: str = ""
    accepted: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Receipt:
    path: str
    body: Any
    status: int


class ChinaFake:
    """The server and the people; a provider subclass adds ``routes``, ``_call_receipts``, ``_sms_receipt``."""

    provider = "china"

    def __init__(self, key_id: str, secret: str, *, callback_base: str = "", token: str = "") -> None:
        self.key_id = key_id
        self.secret = secret
        self.callback_base = callback_base.rstrip("/")
        self.token = token
        self.step_s = 0.05
        self.sent: list[Sent] = []
        self.refused: list[tuple[str, str]] = []  # (what, why): bad signature, injected failure
        self.receipts: list[Receipt] = []
        self._lock = threading.Lock()
        self._fail_next: list[tuple[FailureMode, Api | None]] = []
        self._fail_until: tuple[float, FailureMode, Api | None] | None = None
        self._answers: dict[str, tuple[CallOutcome, str | None]] = {}
        self._deliveries: dict[str, bool] = {}
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self.endpoint = ""  # host:port, what the SDK's endpoint setting takes

    def __repr__(self) -> str:  # no secret, ever
        return f"{type(self).__name__}(key_id={self.key_id!r}, endpoint={self.endpoint!r})"

    # -- lifecycle -------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        app = web.Application()
        self.routes(app)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        self._runner = runner
        self._session = ClientSession(timeout=ClientTimeout(total=10))
        bound = runner.addresses[0]
        self.endpoint = f"{bound[0]}:{bound[1]}"
        log.info("fake %s listening on %s", self.provider, self.endpoint)

    async def stop(self) -> None:
        if self._runner is None:
            return
        self._stopping.set()
        await self._runner.cleanup()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        self._runner = None

    # -- behaviour -------------------------------------------------------------------------

    def fail_next(self, n: int, mode: FailureMode, *, api: Api | None = None) -> None:
        with self._lock:
            self._fail_next.extend([(mode, api)] * n)

    def fail_for(self, seconds: float, mode: FailureMode, *, api: Api | None = None) -> None:
        """Every send (to ``api``, or either) fails with ``mode`` for ``seconds``."""
        with self._lock:
            self._fail_until = (time.monotonic() + seconds, mode, api)

    def clear_failures(self) -> None:
        with self._lock:
            self._fail_next.clear()
            self._fail_until = None

    def answer_as(self, phone: str, outcome: CallOutcome, *, press: str | None = None) -> None:
        """How calls to ``phone`` (E.164) go: answered (pressing ``press``), not answered, busy."""
        with self._lock:
            self._answers[phone] = (outcome, press)

    def deliver_as(self, phone: str, delivered: bool) -> None:
        with self._lock:
            self._deliveries[phone] = delivered

    def _failure(self, api: Api) -> FailureMode | None:
        with self._lock:
            for i, (mode, only) in enumerate(self._fail_next):
                if only in (None, api):
                    del self._fail_next[i]
                    return mode
            until = self._fail_until
            if until is not None and time.monotonic() < until[0] and until[2] in (None, api):
                return until[1]
        return None

    async def _hold(self) -> None:
        """A "timeout" failure: the request is answered only when the fake stops (or after 30 s)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), 30)

    def _record(self, sent: Sent) -> None:
        with self._lock:
            self.sent.append(sent)

    def _refuse(self, what: str, why: str) -> None:
        with self._lock:
            self.refused.append((what, why))
        log.info("fake %s refused %s: %s", self.provider, what, why)

    # -- reading ---------------------------------------------------------------------------

    def messages(self) -> list[Sent]:
        with self._lock:
            return [s for s in self.sent if s.api == "sms" and s.accepted]

    def calls(self) -> list[Sent]:
        with self._lock:
            return [s for s in self.sent if s.api == "voice" and s.accepted]

    def wait_for(self, check: Callable[[], Any], timeout_s: float = 10, what: str = "") -> Any:
        """Poll ``check`` (from any thread) until it returns something truthy."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = check()
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"fake {self.provider}: timed out waiting for {what or check}")

    # -- the people ------------------------------------------------------------------------

    def _after_send(self, sent: Sent, phone: str) -> None:
        """Play the outcome of an accepted send, a step later, on the fake's loop."""
        assert self._loop is not None
        with self._lock:
            answer = self._answers.get(phone, ("answered", None))
            delivered = self._deliveries.get(phone, True)
        if sent.api == "voice":
            receipts = self._call_receipts(sent, phone, *answer)
        else:
            receipts = [self._sms_receipt(sent, phone, delivered)]
        task = self._loop.create_task(self._post_in_turn(receipts))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _call_receipts(self, sent: Sent, phone: str, outcome: CallOutcome, press: str | None) -> list[tuple[str, Any]]:
        raise NotImplementedError

    def _sms_receipt(self, sent: Sent, phone: str, delivered: bool) -> tuple[str, Any]:
        raise NotImplementedError

    def _reply_receipt(self, phone: str, text: str) -> tuple[str, Any]:
        raise NotImplementedError

    async def _post_in_turn(self, receipts: list[tuple[str, Any]]) -> None:
        for path, body in receipts:
            await asyncio.sleep(self.step_s)
            await self._post(path, body)

    async def _post(self, path: str, body: Any, *, token: str | None = None) -> Receipt:
        if not self.callback_base or self._session is None:
            return Receipt(path, body, 0)
        url = f"{self.callback_base}/{self.provider}/{self.token if token is None else token}/{path}"
        try:
            async with self._session.post(
                url, data=json.dumps(body, ensure_ascii=False).encode(), headers={"Content-Type": "application/json"}
            ) as response:
                await response.read()
                status = response.status
        except Exception as error:  # the gateway may be gone; the provider would retry later
            log.info("fake %s: receipt to %s failed: %s", self.provider, path, error)
            status = 0
        receipt = Receipt(path, body, status)
        if token is None:
            with self._lock:
                self.receipts.append(receipt)
        return receipt

    def _run(self, coro: Coroutine[Any, Any, Receipt]) -> Receipt:
        """Run a receipt post on the fake's loop from any thread; its outcome."""
        assert self._loop is not None, "the fake is not running"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(15)

    def press_key(self, call: Sent, digit: str) -> Receipt:
        """The person on ``call`` presses ``digit`` now (the call's receipts follow as the provider sends them)."""
        path, body = self._key_receipt(call, digit)
        return self._run(self._post(path, body))

    def _key_receipt(self, call: Sent, digit: str) -> tuple[str, Any]:
        raise NotImplementedError

    def reply_sms(self, phone: str, text: str) -> Receipt:
        """Someone texts ``text`` from ``phone`` (E.164) to our number."""
        path, body = self._reply_receipt(phone, text)
        return self._run(self._post(path, body))

    def redeliver(self, receipt: Receipt) -> Receipt:
        """The provider's retry: the same receipt again."""
        return self._run(self._post(receipt.path, receipt.body))

    def forge(self, path: str, body: Any, token: str) -> Receipt:
        """A receipt from someone who is not the provider: another token."""
        return self._run(self._post(path, body, token=token))


def new_id() -> str:
    return uuid.uuid4().hex
