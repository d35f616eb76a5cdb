"""A loopback fake of the parts of Twilio the gateway uses: two REST endpoints and the webhooks.

Why a fake server and not a mocked client: the real ``twilio`` package must be exercised
(URL building, form encoding, basic auth, error parsing, its exceptions), so tests and
the demo point the real async client at this server (``client.api.base_url =
fake.base_url``) and the fake answers the way Twilio does:

* ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` (To, From or
  MessagingServiceSid, Body, StatusCallback) and ``.../Calls.json`` (To, From, Twiml or
  Url, StatusCallback, StatusCallbackEvent), form encoded, HTTP basic auth with the
  account SID and auth token -> 201 and the resource JSON (``sid`` "SM"/"CA" + 32 hex,
  ``status`` "queued"), or an error in Twilio's shape ``{"code", "message",
  "more_info", "status"}``: 20003/401 bad credentials, 21211 invalid number, 21610
  blocked recipient, 20429/429, 20500/500, and the 2xxxx codes for missing parameters.
* After accepting, it calls back like Twilio: form-encoded POSTs signed with
  ``X-Twilio-Signature`` (``RequestValidator(auth_token).compute_signature(url,
  params)``) and an ``I-Twilio-Idempotency-Token``. Messages go sent -> delivered (or
  end undelivered/failed with an ErrorCode, see ``deliver_as``); calls go initiated ->
  ringing -> answered (in-progress) -> completed, or end no-answer/busy/failed (see
  ``answer_as``). Only the events the call asked for are posted ("completed" alone when
  it named none).
* It plays the people: ``press_key`` posts the ``<Gather>`` action of the call's TwiML,
  ``reply_sms`` posts an incoming SMS, ``redeliver`` repeats any webhook as Twilio's
  retries do (same parameters, signature and idempotency token).
* Failure injection (``fail_next``, ``fail_for``, ``fail_number``) for retry and
  failover tests; refused requests are recorded too, so attempts can be counted.

Stricter than Twilio on purpose: TwiML that is not well-formed XML is refused when the
call is created (12100) instead of failing the call later. A ``Url`` is recorded but
never fetched: the gateway sends its TwiML inline.

Timing: each status step comes ``step_s`` after the previous one (0.05 s by default);
an answered call waits up to ``answered_call_s`` for a key press, then completes.
``stop()`` cancels callbacks still pending and releases held ("timeout") requests.

Threads: the server runs on the loop that called ``start()``; ``running_in_thread``
gives it a loop of its own for sync code or a gateway on another loop. Records are
read under a lock from any thread; the async helpers hop to the server's loop.

The auth token is never logged; phone numbers are logged at debug level only.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import logging
import re
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, Literal, TypeVar
from urllib.parse import urlencode, urljoin, urlsplit

from aiohttp import ClientError, ClientSession, ClientTimeout, web
from twilio.request_validator import RequestValidator

from gateway.notify.templates import sms_segments

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

FailureMode = Literal["http500", "http429", "timeout", "invalid_number", "blocked"]
FAILURE_MODES: tuple[FailureMode, ...] = ("http500", "http429", "timeout", "invalid_number", "blocked")
CallOutcome = Literal["answered", "no-answer", "busy", "failed"]
DeliveryOutcome = Literal["delivered", "undelivered", "failed"]
Api = Literal["messages", "calls"]
WebhookKind = Literal["message_status", "call_status", "gather", "incoming_sms"]
API_VERSION = "2010-04-01"
USER_AGENT = "TwilioProxy/1.1"

_E164 = re.compile(r"\+[1-9]\d{6,14}")
_CN_NATIONAL = re.compile(r"1[3-9]\d{9}|[2-9]\d{8,10}")  # mobile, or area code + local number
_ALPHANUMERIC_SENDER = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}")
_MESSAGING_SERVICE = re.compile(r"MG[0-9a-f]{32}")
_DEFAULT_ERROR = {"undelivered": 30003, "failed": 30008}  # unreachable handset / unknown error
_REFUSALS: dict[str, tuple[int, int, str]] = {
    "http500": (500, 20500, "An internal server error has occurred"),
    "http429": (429, 20429, "Too Many Requests"),
    "invalid_number": (400, 21211, "The 'To' number {to} is not a valid phone number."),
    "blocked": (400, 21610, "Attempt to send to unsubscribed recipient"),
}


class FakeTwilioError(Exception):
    """The test asked the fake for something Twilio could not do (press a key on a call
    that was never answered, on an unknown call, ...)."""


@dataclass(frozen=True, slots=True)
class SentMessage:
    """One request to the Messages API as it arrived, accepted or not."""

    sid: str | None  # None when refused
    to: str
    from_: str
    body: str
    status_callback: str | None
    messaging_service_sid: str | None
    received_at_ms: int  # wall clock
    received_monotonic: float
    outcome: str  # "queued" when accepted; else a FailureMode, "auth_failed" or "bad_request"
    http_status: int  # the API's answer; 0 while a "timeout" request is held open
    error_code: int | None = None

    @property
    def accepted(self) -> bool:
        return self.outcome == "queued"


@dataclass(frozen=True, slots=True)
class PlacedCall:
    """One request to the Calls API as it arrived, accepted or not."""

    sid: str | None
    to: str
    from_: str
    twiml: str | None
    url: str | None
    status_callback: str | None
    status_callback_events: tuple[str, ...]
    gather_action: str | None  # the <Gather action> of the TwiML, resolved against Url
    received_at_ms: int
    received_monotonic: float
    outcome: str
    http_status: int
    error_code: int | None = None

    @property
    def accepted(self) -> bool:
        return self.outcome == "queued"


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One request the fake made to the gateway, and what the gateway answered."""

    kind: WebhookKind
    url: str  # as requested (for GET, with the parameters in the query)
    method: str
    params: Mapping[str, str]
    signature: str | None  # the X-Twilio-Signature header sent; None: unsigned
    idempotency_token: str  # I-Twilio-Idempotency-Token, the same on a redelivery
    status: int  # the gateway's HTTP status; 0 if it could not be reached
    body: str
    error: str | None  # why the gateway could not be reached
    sent_at_ms: int
    sent_monotonic: float
    redelivery: bool = False


@dataclass(eq=False)
class _LiveCall:
    record: PlacedCall
    outcome: CallOutcome
    press: str | None
    gather_action: str | None
    gather_method: str
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    hangup: asyncio.Event = field(default_factory=asyncio.Event)
    ended: bool = False


class FakeTwilio:
    """Twilio's Messages and Calls API and its webhooks, on a loopback port."""

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
        self._live: dict[str, _LiveCall] = {}
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

    def __repr__(self) -> str:  # no token, ever
        return f"FakeTwilio(account_sid={self.account_sid!r}, base_url={self._base_url!r})"

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if self._runner is not None:
            raise RuntimeError("the fake is already running")
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.current_thread()
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{account}/Messages.json", self._messages_api)
        app.router.add_post("/2010-04-01/Accounts/{account}/Calls.json", self._calls_api)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._session = ClientSession(timeout=ClientTimeout(total=self.webhook_s))
        bound_host, bound_port = runner.addresses[0][:2]
        shown_host = f"[{bound_host}]" if ":" in bound_host else bound_host
        self._base_url = f"http://{shown_host}:{bound_port}"
        log.info("fake Twilio listening on %s", self._base_url)

    async def stop(self) -> None:
        if self._runner is None:
            return
        assert self._stopping is not None and self._session is not None
        self._stopping.set()  # held "timeout" requests answer now
        await self._runner.cleanup()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._session.close()
        self._runner = None
        self._base_url = ""
        log.info("fake Twilio stopped")

    async def __aenter__(self) -> FakeTwilio:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``: what ``client.api.base_url`` should be set to."""
        if not self._base_url:
            raise RuntimeError("the fake is not running")
        return self._base_url

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the fake is not running")
        return self._loop

    # --- what happened -----------------------------------------------------------------------------

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
            _at_least(n, lambda: self._accepted_messages(accepted_only)), timeout_s, f"{n} messages"
        )

    async def wait_for_calls(self, n: int, timeout_s: float = 5.0, *, accepted_only: bool = True) -> list[PlacedCall]:
        return await self.wait_until(_at_least(n, lambda: self._accepted_calls(accepted_only)), timeout_s, f"{n} calls")

    async def wait_for_webhooks(
        self, n: int, kind: WebhookKind | None = None, timeout_s: float = 5.0
    ) -> list[WebhookDelivery]:
        return await self.wait_until(
            _at_least(n, lambda: self._webhooks_of(kind)), timeout_s, f"{n} {kind or ''} webhooks"
        )

    def wait_for_messages_sync(
        self, n: int, timeout_s: float = 5.0, *, accepted_only: bool = True
    ) -> list[SentMessage]:
        return self.wait_until_sync(
            _at_least(n, lambda: self._accepted_messages(accepted_only)), timeout_s, f"{n} messages"
        )

    def wait_for_calls_sync(self, n: int, timeout_s: float = 5.0, *, accepted_only: bool = True) -> list[PlacedCall]:
        return self.wait_until_sync(_at_least(n, lambda: self._accepted_calls(accepted_only)), timeout_s, f"{n} calls")

    def wait_for_webhooks_sync(
        self, n: int, kind: WebhookKind | None = None, timeout_s: float = 5.0
    ) -> list[WebhookDelivery]:
        return self.wait_until_sync(
            _at_least(n, lambda: self._webhooks_of(kind)), timeout_s, f"{n} {kind or ''} webhooks"
        )

    # --- behaviour and failures (any thread) -------------------------------------------------------

    def fail_next(self, n: int, mode: FailureMode, *, api: Api | None = None) -> None:
        """The next ``n`` authenticated requests (to ``api``, or to either) fail with ``mode``."""
        with self._lock:
            self._fail_next.extend([(mode, api)] * n)

    def fail_for(self, seconds: float, mode: FailureMode, *, api: Api | None = None) -> None:
        """Every authenticated request for the next ``seconds`` fails with ``mode``."""
        with self._lock:
            self._fail_window = (time.monotonic() + seconds, mode, api)

    def fail_number(self, phone: str, mode: FailureMode) -> None:
        """Every request to ``phone`` fails with ``mode`` until ``clear_failures()``."""
        with self._lock:
            self._fail_numbers[phone] = mode

    def clear_failures(self) -> None:
        with self._lock:
            self._fail_next.clear()
            self._fail_window = None
            self._fail_numbers.clear()

    def answer_as(self, phone: str, outcome: CallOutcome, *, press: str | None = None) -> None:
        """How calls to ``phone`` go from now on (default: "answered", no key pressed).
        ``press``: an answered call presses these digits by itself one step after answering."""
        with self._lock:
            self._answers[phone] = (outcome, press)

    def deliver_as(self, phone: str, outcome: DeliveryOutcome, error_code: int | None = None) -> None:
        """How messages to ``phone`` end (default "delivered"); undelivered/failed carry
        ``error_code`` (default 30003 / 30008)."""
        with self._lock:
            self._deliveries[phone] = (outcome, error_code if outcome != "delivered" else None)

    # --- playing the people ------------------------------------------------------------------------

    async def press_key(
        self, call_sid: str, digits: str, *, unsigned: bool = False, bad_signature: bool = False
    ) -> WebhookDelivery:
        """The person on the call presses ``digits``: POST the Gather webhook, return what
        the gateway answered. A genuine press ends the call unless the answer holds another
        ``<Gather>``; a forged one (``unsigned``, ``bad_signature``) changes nothing."""
        return await self._on_loop(self._press_key(call_sid, digits, unsigned, bad_signature))

    async def reply_sms(
        self,
        from_number: str,
        to_number: str,
        body: str,
        webhook_url: str,
        *,
        unsigned: bool = False,
        bad_signature: bool = False,
    ) -> WebhookDelivery:
        """Someone texts ``body`` from ``from_number`` to our number ``to_number``."""
        sid = _sid("SM")
        params = {
            "MessageSid": sid,
            "SmsSid": sid,
            "SmsMessageSid": sid,
            "AccountSid": self.account_sid,
            "From": from_number,
            "To": to_number,
            "Body": body,
            "NumMedia": "0",
            "NumSegments": str(max(1, sms_segments(body))),
            "SmsStatus": "received",
            "ApiVersion": API_VERSION,
        }
        return await self._on_loop(
            self._webhook("incoming_sms", webhook_url, params, sign=_sign_mode(unsigned, bad_signature))
        )

    async def hang_up(self, call_sid: str) -> None:
        """The person hangs up an answered call without pressing anything."""
        await self._on_loop(self._hang_up(call_sid))

    async def redeliver(self, delivery: WebhookDelivery | None = None) -> WebhookDelivery:
        """Send a webhook again exactly as before (the last one by default), as Twilio does
        when it retries: same URL, parameters, signature header and idempotency token."""
        if delivery is None:
            with self._lock:
                if not self._webhooks:
                    raise FakeTwilioError("no webhook has been sent yet")
                delivery = self._webhooks[-1]
        d = delivery
        return await self._on_loop(
            self._send(d.kind, d.url, d.method, d.params, d.signature, d.idempotency_token, redelivery=True)
        )

    def run_blocking(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        """Run one of the async helpers from a thread without a loop (the fake must be
        running in another thread, see ``running_in_thread``)."""
        if threading.current_thread() is self._loop_thread:
            coro.close()
            raise RuntimeError("run_blocking would block the fake's own loop")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    # --- the REST API ------------------------------------------------------------------------------

    async def _messages_api(self, request: web.Request) -> web.StreamResponse:
        arrived_ms, arrived = _wall_ms(), time.monotonic()
        form = await request.post()
        to, from_, body = _field(form, "To"), _field(form, "From"), _field(form, "Body")
        service = _field(form, "MessagingServiceSid") or None
        callback = _field(form, "StatusCallback") or None

        def record(outcome: str, status: int, code: int | None = None, sid: str | None = None) -> SentMessage:
            entry = SentMessage(sid, to, from_, body, callback, service, arrived_ms, arrived, outcome, status, code)
            self._append(self._messages, entry)
            return entry

        refusal = await self._gate(request, "messages", to, record)
        if refusal is not None:
            return refusal
        problem = _message_problem(to, from_, body, service, callback)
        if problem is not None:
            record("bad_request", 400, problem[0])
            return _error(400, *problem)
        sid = _sid("SM")
        entry = record("queued", 201, sid=sid)
        self._set_status(sid, "queued")
        log.info("fake Twilio accepted message %s", sid)
        log.debug("message %s from %s to %s: %r", sid, from_, to, body)
        self._spawn(self._run_message(entry), f"fake-twilio-{sid}")
        return web.json_response(
            self._resource(
                sid,
                "Messages",
                {
                    "body": body,
                    "date_sent": None,
                    "error_code": None,
                    "error_message": None,
                    "from": from_ or None,
                    "messaging_service_sid": service,
                    "num_media": "0",
                    "num_segments": str(sms_segments(body)),
                    "to": to,
                    "subresource_uris": {"media": f"{self._path('Messages', sid)}/Media.json"},
                },
            ),
            status=201,
        )

    async def _calls_api(self, request: web.Request) -> web.StreamResponse:
        arrived_ms, arrived = _wall_ms(), time.monotonic()
        form = await request.post()
        to, from_ = _field(form, "To"), _field(form, "From")
        twiml, url = _field(form, "Twiml") or None, _field(form, "Url") or None
        callback = _field(form, "StatusCallback") or None
        events = tuple(str(e) for e in form.getall("StatusCallbackEvent", []))
        gather: tuple[str | None, str] = (None, "POST")
        with contextlib.suppress(ET.ParseError):
            gather = _gather_of(twiml, url) if twiml else (None, "POST")

        def record(outcome: str, status: int, code: int | None = None, sid: str | None = None) -> PlacedCall:
            entry = PlacedCall(
                sid, to, from_, twiml, url, callback, events, gather[0], arrived_ms, arrived, outcome, status, code
            )
            self._append(self._calls, entry)
            return entry

        refusal = await self._gate(request, "calls", to, record)
        if refusal is not None:
            return refusal
        problem = _call_problem(to, from_, twiml, url, callback)
        if problem is not None:
            record("bad_request", 400, problem[0])
            return _error(400, *problem)
        sid = _sid("CA")
        entry = record("queued", 201, sid=sid)
        with self._lock:
            outcome, press = self._answers.get(to, ("answered", None))
            live = _LiveCall(entry, outcome, press, gather[0], gather[1])
            self._live[sid] = live
        self._set_status(sid, "queued")
        log.info("fake Twilio accepted call %s", sid)
        log.debug("call %s from %s to %s will be %s", sid, from_, to, outcome)
        self._spawn(self._run_call(live), f"fake-twilio-{sid}")
        return web.json_response(
            self._resource(
                sid,
                "Calls",
                {
                    "annotation": None,
                    "answered_by": None,
                    "caller_name": None,
                    "duration": None,
                    "end_time": None,
                    "forwarded_from": None,
                    "from": from_,
                    "from_formatted": from_,
                    "group_sid": None,
                    "parent_call_sid": None,
                    "phone_number_sid": None,
                    "queue_time": "0",
                    "start_time": None,
                    "to": to,
                    "to_formatted": to,
                    "trunk_sid": None,
                    "subresource_uris": {},
                },
            ),
            status=201,
        )

    def _resource(self, sid: str, collection: str, fields: dict[str, Any]) -> dict[str, Any]:
        """The JSON of a new resource, as ``MessageInstance`` / ``CallInstance`` read it."""
        now = _rfc2822()
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "date_created": now,
            "date_updated": now,
            "direction": "outbound-api",
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued",
            "uri": f"{self._path(collection, sid)}.json",
            **fields,
        }

    def _path(self, collection: str, sid: str) -> str:
        return f"/{API_VERSION}/Accounts/{self.account_sid}/{collection}/{sid}"

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        return _error(404, 20404, f"The requested resource {request.path} was not found")

    async def _gate(
        self, request: web.Request, api: Api, to: str, record: Callable[[str, int, int | None], object]
    ) -> web.StreamResponse | None:
        """Authentication, then any injected failure: the answer that refuses the request."""
        if not self._authorised(request):
            record("auth_failed", 401, 20003)
            log.info("fake Twilio refused a request: bad credentials")
            return _error(401, 20003, "Authenticate", {"WWW-Authenticate": 'Basic realm="Twilio API"'})
        mode = self._take_failure(api, to)
        if mode is None:
            return None
        log.info("fake Twilio injects %s into a %s request", mode, api)
        if mode == "timeout":  # hold the request open longer than any client waits
            record("timeout", 0, None)
            assert self._stopping is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.hold_s)
            status, code, message = _REFUSALS["http500"]  # for a client still listening
            return _error(status, code, message)
        status, code, message = _REFUSALS[mode]
        record(mode, status, code)
        return _error(status, code, message.format(to=to))

    def _authorised(self, request: web.Request) -> bool:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).decode("latin-1").partition(":")
        except (binascii.Error, ValueError):
            return False
        return (
            bool(sep)
            and hmac.compare_digest(user.encode(), self.account_sid.encode())
            and hmac.compare_digest(password.encode("latin-1"), self._token)
            and request.match_info.get("account") == self.account_sid
        )

    def _take_failure(self, api: Api, to: str) -> FailureMode | None:
        with self._lock:
            if to in self._fail_numbers:
                return self._fail_numbers[to]
            for i, (mode, only) in enumerate(self._fail_next):
                if only in (None, api):
                    del self._fail_next[i]
                    return mode
            window = self._fail_window
            if window is not None and time.monotonic() < window[0] and window[2] in (None, api):
                return window[1]
            return None

    # --- what happens after accepting --------------------------------------------------------------

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
            if status in _DEFAULT_ERROR:
                params["ErrorCode"] = str(code or _DEFAULT_ERROR[status])
            await self._webhook("message_status", msg.status_callback, params)

    async def _run_call(self, live: _LiveCall) -> None:
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
                "Timestamp": _rfc2822(),
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

    async def _press_key(self, call_sid: str, digits: str, unsigned: bool, bad_signature: bool) -> WebhookDelivery:
        live = self._live_call(call_sid)
        if live.outcome != "answered":
            raise FakeTwilioError(f"call {call_sid} was not answered ({live.outcome})")
        try:
            await asyncio.wait_for(live.answered.wait(), max(5.0, 10 * self.step_s))
        except TimeoutError:
            raise FakeTwilioError(f"call {call_sid} was not answered in time") from None
        if live.ended:
            raise FakeTwilioError(f"call {call_sid} has already ended")
        if not live.gather_action:
            raise FakeTwilioError(f"call {call_sid} has no <Gather action> to press keys for")
        rec = live.record
        params = {
            "AccountSid": self.account_sid,
            "CallSid": call_sid,
            "From": rec.from_,
            "To": rec.to,
            "CallStatus": "in-progress",
            "Direction": "outbound-api",
            "ApiVersion": API_VERSION,
            "Digits": digits,
            "msg": "Gather End",
        }
        forged = unsigned or bad_signature
        delivery = await self._webhook(
            "gather", live.gather_action, params, method=live.gather_method, sign=_sign_mode(unsigned, bad_signature)
        )
        if forged:
            return delivery
        following: tuple[str | None, str] = (None, "POST")
        if 200 <= delivery.status < 300 and delivery.body.strip():
            with contextlib.suppress(ET.ParseError):
                following = _gather_of(delivery.body, live.gather_action)
        if following[0]:
            live.gather_action, live.gather_method = following
        else:
            live.hangup.set()
        return delivery

    async def _hang_up(self, call_sid: str) -> None:
        self._live_call(call_sid).hangup.set()

    def _live_call(self, call_sid: str) -> _LiveCall:
        with self._lock:
            live = self._live.get(call_sid)
        if live is None:
            raise FakeTwilioError(f"no call {call_sid}")
        return live

    # --- webhooks ----------------------------------------------------------------------------------

    async def _webhook(
        self,
        kind: WebhookKind,
        url: str,
        params: Mapping[str, str],
        *,
        method: str = "POST",
        sign: Literal["valid", "missing", "wrong"] = "valid",
    ) -> WebhookDelivery:
        """Sign as Twilio does: HMAC-SHA1 of the full URL followed by the POST parameters
        sorted by name (for GET the parameters are in the URL and nothing is appended)."""
        method = method.upper()
        target = url if method == "POST" else url + ("&" if "?" in url else "?") + urlencode(params)
        signed = dict(params) if method == "POST" else {}
        signature = None
        if sign != "missing":
            signer = self._validator if sign == "valid" else self._forger
            signature = signer.compute_signature(target, signed)
        return await self._send(kind, target, method, params, signature, f"{self.account_sid}-{uuid.uuid4()}")

    async def _send(
        self,
        kind: WebhookKind,
        url: str,
        method: str,
        params: Mapping[str, str],
        signature: str | None,
        token: str,
        *,
        redelivery: bool = False,
    ) -> WebhookDelivery:
        if self._session is None or self._session.closed:
            raise RuntimeError("the fake is not running")
        headers = {
            "User-Agent": USER_AGENT,
            "I-Twilio-Idempotency-Token": token,
            "Accept": "*/*",
            "Cache-Control": "max-age=259200",
        }
        if signature is not None:
            headers["X-Twilio-Signature"] = signature
        data = None
        if method == "POST":
            headers["Content-Type"] = "application/x-www-form-urlencoded; charset=UTF-8"
            data = urlencode(params).encode()
        sent_ms, sent = _wall_ms(), time.monotonic()
        status, body, error = 0, "", None
        try:
            async with self._session.request(method, url, data=data, headers=headers) as response:
                status, body = response.status, await response.text()
        except (ClientError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.info("fake Twilio could not deliver a %s webhook: %s", kind, type(exc).__name__)
        delivery = WebhookDelivery(
            kind, url, method, dict(params), signature, token, status, body, error, sent_ms, sent, redelivery
        )
        self._append(self._webhooks, delivery)
        return delivery

    # --- plumbing ----------------------------------------------------------------------------------

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


@contextlib.contextmanager
def running_in_thread(
    fake: FakeTwilio, host: str = "127.0.0.1", port: int = 0, *, timeout_s: float = 10.0
) -> Iterator[FakeTwilio]:
    """Run ``fake`` on its own event loop in a daemon thread for the ``with`` block."""
    loop = asyncio.new_event_loop()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    thread = threading.Thread(target=serve, name="fake-twilio", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(fake.start(host, port), loop).result(timeout_s)
        try:
            yield fake
        finally:
            asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(timeout_s)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout_s)


# --- validation, formats ----------------------------------------------------------------------------


def is_plausible_number(number: str) -> bool:
    """E.164, and for China (+86) and NANP (+1) the right national length."""
    if not _E164.fullmatch(number):
        return False
    if number.startswith("+86"):
        return bool(_CN_NATIONAL.fullmatch(number[3:]))
    if number.startswith("+1"):
        return len(number) == 12 and number[2] not in "01"
    return True


def _message_problem(
    to: str, from_: str, body: str, service: str | None, callback: str | None
) -> tuple[int, str] | None:
    if not to:
        return 21604, "A 'To' phone number is required."
    if not is_plausible_number(to):
        return 21211, f"The 'To' number {to} is not a valid phone number."
    if not from_ and not service:
        return 21603, "A 'From' phone number is required."
    if from_ and not (is_plausible_number(from_) or _ALPHANUMERIC_SENDER.fullmatch(from_)):
        return 21212, f"The 'From' number {from_} is not a valid phone number, shortcode, or alphanumeric ID."
    if service and not _MESSAGING_SERVICE.fullmatch(service):
        return 21701, f"The Messaging Service Sid {service} is invalid."
    if to == from_:
        return 21266, "'To' and 'From' number cannot be the same"
    if not body:
        return 21602, "Message body is required."
    if len(body) > 1600:
        return 21617, "The concatenated message body exceeds the 1600 character limit."
    if callback is not None and not _is_url(callback):
        return 21609, f"The StatusCallback URL {callback} is not a valid URL."
    return None


def _call_problem(
    to: str, from_: str, twiml: str | None, url: str | None, callback: str | None
) -> tuple[int, str] | None:
    if not to:
        return 21201, "No 'To' number is specified"
    if not is_plausible_number(to):
        return 21211, f"The 'To' number {to} is not a valid phone number."
    if not from_:
        return 21213, "No 'From' number is specified"
    if not is_plausible_number(from_):
        return 21212, f"The 'From' number {from_} is not a valid phone number."
    if to == from_:
        return 21266, "'To' and 'From' number cannot be the same"
    if twiml is None and url is None:
        return 21205, "Either a 'Url' or a 'Twiml' parameter is required."
    if url is not None and not _is_url(url):
        return 21205, f"Url is not a valid URL: {url}"
    if twiml is not None:
        try:
            root = ET.fromstring(twiml)
        except ET.ParseError as error:
            return 12100, f"Document parse failure: {error}"
        if root.tag != "Response":
            return 12100, "Document parse failure: the root element must be <Response>"
    if callback is not None and not _is_url(callback):
        return 21609, f"The StatusCallback URL {callback} is not a valid URL."
    return None


def _gather_of(twiml: str, base: str | None) -> tuple[str | None, str]:
    """The action URL and method of the first ``<Gather>``, resolved against ``base``."""
    gather = ET.fromstring(twiml).find(".//Gather")
    if gather is None or not gather.get("action"):
        return None, "POST"
    action = gather.get("action", "")
    action = urljoin(base, action) if base else action
    return (action if _is_url(action) else None), gather.get("method", "POST").upper()


def _is_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and "_" not in (parts.hostname or "")


def _error(status: int, code: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """Twilio's error body; ``twilio`` turns it into ``TwilioRestException(status, code, msg)``."""
    return web.json_response(
        {"code": code, "message": message, "status": status, "more_info": f"https://www.twilio.com/docs/errors/{code}"},
        status=status,
        headers=dict(headers or {}),
    )


def _field(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _at_least(n: int, found: Callable[[], list[R]]) -> Callable[[], list[R] | None]:
    def check() -> list[R] | None:
        items = found()
        return items if len(items) >= n else None

    return check


def _sign_mode(unsigned: bool, bad_signature: bool) -> Literal["valid", "missing", "wrong"]:
    return "missing" if unsigned else "wrong" if bad_signature else "valid"


def _sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _rfc2822() -> str:
    return format_datetime(datetime.now(UTC))
