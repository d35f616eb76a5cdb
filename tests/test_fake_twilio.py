"""The fake Twilio, driven by the real ``twilio`` async client and checked by a real HTTP receiver.

aiohttp 3.14 deprecates the ``BasicAuth`` helper and the ``auth=`` argument that
``twilio``'s AsyncTwilioHttpClient still uses; those two warnings (from the library,
not from us) are ignored here, every other warning is an error.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from aiohttp import web
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from gateway.notify.templates import MessageContext, render_gather_reply, render_voice_twiml
from simulators.providers.twilio.formats import is_plausible_number
from simulators.providers.twilio.records import FakeTwilioError
from simulators.providers.twilio.server import FakeTwilio, running_in_thread

pytestmark = [
    pytest.mark.filterwarnings("ignore:BasicAuth is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The 'auth' parameter is deprecated:DeprecationWarning"),
]

T = TypeVar("T")
ACCOUNT = "AC" + "0123456789abcdef" * 2
TOKEN = "test-auth-token-8f2d"
OURS = "+15005550006"
FAMILY = "+8613800138000"
GRID = "+8613900139000"
EVENTS = ["initiated", "ringing", "answered", "completed"]


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


@asynccontextmanager
async def twilio_client(fake: FakeTwilio, token: str = TOKEN) -> AsyncIterator[Client]:
    """The gateway's way: the real client, async HTTP, base URL pointed at the fake."""
    http = AsyncTwilioHttpClient()
    client = Client(ACCOUNT, token, http_client=http)
    client.api.base_url = fake.base_url
    try:
        yield client
    finally:
        await http.close()


@dataclass
class Hit:
    path: str
    url: str
    params: dict[str, str]
    headers: dict[str, str]
    valid: bool


@dataclass
class Receiver:
    """The gateway's side of the webhooks: records each request and checks its signature."""

    replies: dict[str, str] = field(default_factory=dict)  # path prefix -> TwiML body
    hits: list[Hit] = field(default_factory=list)
    base: str = ""
    validator: RequestValidator = field(default_factory=lambda: RequestValidator(TOKEN))

    async def handle(self, request: web.Request) -> web.Response:
        form = await request.post()
        params = {k: str(v) for k, v in form.items()}
        signature = request.headers.get("X-Twilio-Signature", "")
        valid = bool(signature) and self.validator.validate(str(request.url), params, signature)
        self.hits.append(Hit(request.path, str(request.url), params, dict(request.headers), valid))
        if not valid:
            return web.Response(status=403, text="invalid signature")
        for prefix, body in self.replies.items():
            if request.path.startswith(prefix):
                return web.Response(text=body, content_type="application/xml")
        return web.Response(text="")

    def on(self, prefix: str) -> list[Hit]:
        return [h for h in self.hits if h.path.startswith(prefix)]


@asynccontextmanager
async def receiver(**replies: str) -> AsyncIterator[Receiver]:
    rec = Receiver(replies={f"/{k}": v for k, v in replies.items()})
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    rec.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield rec
    finally:
        await runner.cleanup()


def twiml_for(action: str, language: str = "zh") -> str:
    ctx = MessageContext("王秀英", "sos", "critical", 1_795_000_000_000, "A17", recipient_language=language)
    return render_voice_twiml(ctx, action)


def gather_reply() -> str:
    verbs = render_gather_reply("zh", True, None)
    return f'<?xml version="1.0" encoding="UTF-8"?><Response>{verbs}</Response>'


async def place_call(client: Client, to: str, gather_url: str, **kwargs: Any) -> str:
    call = await client.calls.create_async(to=to, from_=OURS, twiml=twiml_for(gather_url), **kwargs)
    return call.sid or ""


# --- the REST API ---------------------------------------------------------------------------------


def test_sms_and_call_through_the_real_client() -> None:
    async def main() -> None:
        async with FakeTwilio(ACCOUNT, TOKEN) as fake, twilio_client(fake) as client:
            message = await client.messages.create_async(
                to=FAMILY, from_=OURS, body="王秀英 紧急呼叫 (A17)", status_callback="http://127.0.0.1:9/status/1"
            )
            assert re.fullmatch(r"SM[0-9a-f]{32}", message.sid or "")
            assert message.status == "queued"
            assert (message.to, message.from_, message.body) == (FAMILY, OURS, "王秀英 紧急呼叫 (A17)")
            assert message.account_sid == ACCOUNT and message.date_created is not None
            assert message.num_segments == "1"

            twiml = twiml_for("http://127.0.0.1:9/gather/5")
            call = await client.calls.create_async(
                to=GRID,
                from_=OURS,
                twiml=twiml,
                status_callback="http://127.0.0.1:9/status/5",
                status_callback_event=EVENTS,
            )
            assert re.fullmatch(r"CA[0-9a-f]{32}", call.sid or "")
            assert call.status == "queued" and call.to == GRID

            [sent] = fake.messages
            assert sent.sid == message.sid and sent.accepted and sent.http_status == 201
            assert sent.status_callback == "http://127.0.0.1:9/status/1"
            assert 0 < time.time() * 1000 - sent.received_at_ms < 5_000
            [placed] = fake.calls
            assert placed.sid == call.sid and placed.twiml == twiml
            assert placed.status_callback_events == tuple(EVENTS)
            assert placed.gather_action == "http://127.0.0.1:9/gather/5"

    run(main())


def test_wrong_credentials_are_refused_with_20003() -> None:
    async def main() -> None:
        async with FakeTwilio(ACCOUNT, TOKEN) as fake, twilio_client(fake, token="not-the-token") as client:
            with pytest.raises(TwilioRestException) as caught:
                await client.messages.create_async(to=FAMILY, from_=OURS, body="hi")
            assert (caught.value.status, caught.value.code) == (401, 20003)
            with pytest.raises(TwilioRestException) as caught:
                await client.calls.create_async(to=FAMILY, from_=OURS, twiml="<Response/>")
            assert caught.value.code == 20003
            assert [m.outcome for m in fake.messages] == ["auth_failed"]
            assert [c.outcome for c in fake.calls] == ["auth_failed"]
            assert TOKEN not in repr(fake)

    run(main())


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"to": "+86123", "body": "x"}, 21211),
        ({"to": "13800138000", "body": "x"}, 21211),
        ({"to": "+8612345678901", "body": "x"}, 21211),  # +86 mobile numbers start 13-19
        ({"to": "+1055501234", "body": "x"}, 21211),
        ({"to": FAMILY, "body": ""}, 21602),
        ({"to": FAMILY, "body": "x" * 1601}, 21617),
        ({"to": OURS, "body": "x"}, 21266),
        ({"to": FAMILY, "body": "x", "status_callback": "not a url"}, 21609),
    ],
)
def test_bad_messages_get_twilios_error_codes(kwargs: dict[str, str], code: int) -> None:
    async def main() -> None:
        async with FakeTwilio(ACCOUNT, TOKEN) as fake, twilio_client(fake) as client:
            with pytest.raises(TwilioRestException) as caught:
                await client.messages.create_async(from_=OURS, **kwargs)
            assert (caught.value.status, caught.value.code) == (400, code)
            [attempt] = fake.messages
            assert (attempt.outcome, attempt.error_code, attempt.sid) == ("bad_request", code, None)
            assert not fake.webhooks

    run(main())


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"to": "+86123", "twiml": "<Response/>"}, 21211),
        ({"to": FAMILY}, 21205),
        ({"to": FAMILY, "url": "ftp://example.com/x"}, 21205),
        ({"to": FAMILY, "twiml": "<Response><Say>unclosed</Response>"}, 12100),
    ],
)
def test_bad_calls_get_twilios_error_codes(kwargs: dict[str, str], code: int) -> None:
    async def main() -> None:
        async with FakeTwilio(ACCOUNT, TOKEN) as fake, twilio_client(fake) as client:
            with pytest.raises(TwilioRestException) as caught:
                await client.calls.create_async(from_=OURS, **kwargs)
            assert (caught.value.status, caught.value.code) == (400, code)

    run(main())


def test_the_message_of_21211_is_twilios() -> None:
    async def main() -> None:
        async with FakeTwilio(ACCOUNT, TOKEN) as fake, twilio_client(fake) as client:
            with pytest.raises(TwilioRestException) as caught:
                await client.messages.create_async(to="+86123", from_=OURS, body="x")
            assert "The 'To' number +86123 is not a valid phone number." in caught.value.msg

    run(main())


def test_unknown_resources_are_404() -> None:
    async def main() -> None:
        async with FakeTwilio(ACCOUNT, TOKEN) as fake, twilio_client(fake) as client:
            with pytest.raises(TwilioRestException) as caught:
                await client.messages("SM" + "0" * 32).fetch_async()
            assert (caught.value.status, caught.value.code) == (404, 20404)

    run(main())


@pytest.mark.parametrize(
    ("number", "plausible"),
    [
        ("+8613800138000", True),
        ("+862161234567", True),
        ("+8675512345678", True),
        ("+15005550006", True),
        ("+447700900123", True),
        ("+86123", False),
        ("+8613800", False),
        ("8613800138000", False),
        ("+86 138 0013 8000", False),
        ("+0123456789", False),
        ("+12125551234567", False),
        ("", False),
    ],
)
def test_plausible_numbers(number: str, plausible: bool) -> None:
    assert is_plausible_number(number) is plausible


# --- failure injection ----------------------------------------------------------------------------


def test_fail_next_http500_then_success() -> None:
    async def main() -> None:
        async with FakeTwilio(ACCOUNT, TOKEN) as fake, twilio_client(fake) as client:
            fake.fail_next(2, "http500")
            for _ in range(2):
                with pytest.raises(TwilioRestException) as caught:
                    await client.messages.create_async(to=FAMILY, from_=OURS, body="hi")
                assert (caught.value.status, caught.value.code) == (500, 20500)
            message = await client.messages.create_async(to=FAMILY, from_=OURS, body="hi")
            assert message.status == "queued"
            assert [m.outcome for m in fake.messages] == ["http500", "http500", "queued"]
            assert [m.sid for m in await fake.wait_for_messages(1)] == [message.sid]
            assert len(await fake.wait_for_messages(3, accepted_only=False)) == 3

    run(main())


def test_fail_next_only_for_one_api_and_429() -> None:
    async def main() -> None:
        async with FakeTwilio(ACCOUNT, TOKEN) as fake, twilio_client(fake) as client:
            fake.fail_next(1, "http429", api="calls")
            await client.messages.create_async(to=FAMILY, from_=OURS, body="not affected")
            with pytest.raises(TwilioRestException) as caught:
                await client.calls.create_async(to=FAMILY, from_=OURS, twiml="<Response/>")
            assert (caught.value.status, caught.value.code) == (429, 20429)
            call = await client.calls.create_async(to=FAMILY, from_=OURS, twiml="<Response/>")
            assert call.status == "queued"

    run(main())


def test_fail_number_blocked_and_invalid_until_cleared() -> None:
    async def main() -> None:
        async with FakeTwilio(ACCOUNT, TOKEN) as fake, twilio_client(fake) as client:
            fake.fail_number(FAMILY, "blocked")
            fake.fail_number(GRID, "invalid_number")
            with pytest.raises(TwilioRestException) as caught:
                await client.messages.create_async(to=FAMILY, from_=OURS, body="hi")
            assert (caught.value.status, caught.value.code) == (400, 21610)
            with pytest.raises(TwilioRestException) as caught:
                await client.calls.create_async(to=GRID, from_=OURS, twiml="<Response/>")
            assert caught.value.code == 21211
            await client.messages.create_async(to="+8613700137000", from_=OURS, body="others still work")
            fake.clear_failures()
            await client.messages.create_async(to=FAMILY, from_=OURS, body="hi")
            assert [m.outcome for m in fake.messages] == ["blocked", "queued", "queued"]

    run(main())


def test_fail_for_a_window() -> None:
    async def main() -> None:
        async with FakeTwilio(ACCOUNT, TOKEN) as fake, twilio_client(fake) as client:
            fake.fail_for(0.2, "http500")
            started = time.monotonic()
            with pytest.raises(TwilioRestException):
                await client.messages.create_async(to=FAMILY, from_=OURS, body="hi")
            await asyncio.sleep(max(0.0, 0.25 - (time.monotonic() - started)))
            await client.messages.create_async(to=FAMILY, from_=OURS, body="hi")
            assert [m.outcome for m in fake.messages] == ["http500", "queued"]

    run(main())


def test_timeout_mode_holds_the_request_until_the_client_gives_up_and_stop_releases_it() -> None:
    async def main() -> None:
        fake = FakeTwilio(ACCOUNT, TOKEN, hold_s=30.0)
        await fake.start()
        try:
            async with twilio_client(fake) as client:
                fake.fail_next(1, "timeout")
                started = time.monotonic()
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.3):
                        await client.messages.create_async(to=FAMILY, from_=OURS, body="hi")
                assert time.monotonic() - started < 2.0
                [held] = fake.messages
                assert (held.outcome, held.http_status) == ("timeout", 0)
                message = await client.messages.create_async(to=FAMILY, from_=OURS, body="hi")
                assert message.status == "queued"
        finally:
            stopping = time.monotonic()
            await fake.stop()
        assert time.monotonic() - stopping < 3.0  # the held request did not keep the server up

    run(main())


# --- callbacks and the people ----------------------------------------------------------------------


def test_message_status_callbacks_are_signed_and_in_order() -> None:
    async def main() -> None:
        async with receiver() as gw, FakeTwilio(ACCOUNT, TOKEN, step_s=0.01) as fake, twilio_client(fake) as client:
            fake.deliver_as(GRID, "undelivered")
            fake.deliver_as("+8613700137000", "failed", error_code=30006)
            ok = await client.messages.create_async(
                to=FAMILY, from_=OURS, body="a", status_callback=f"{gw.base}/status/1"
            )
            lost = await client.messages.create_async(
                to=GRID, from_=OURS, body="b", status_callback=f"{gw.base}/status/2"
            )
            failed = await client.messages.create_async(
                to="+8613700137000", from_=OURS, body="c", status_callback=f"{gw.base}/status/3"
            )
            await fake.wait_for_webhooks(5, "message_status")
            assert all(h.valid for h in gw.hits)
            assert [h.params["MessageStatus"] for h in gw.on("/status/1")] == ["sent", "delivered"]
            assert [h.params["MessageStatus"] for h in gw.on("/status/2")] == ["sent", "undelivered"]
            assert [h.params["MessageStatus"] for h in gw.on("/status/3")] == ["failed"]
            first = gw.on("/status/1")[0].params
            assert first["MessageSid"] == ok.sid and first["AccountSid"] == ACCOUNT
            assert (first["From"], first["To"]) == (OURS, FAMILY) and "ErrorCode" not in first
            assert gw.on("/status/2")[-1].params["ErrorCode"] == "30003"
            assert gw.on("/status/3")[-1].params["ErrorCode"] == "30006"
            assert gw.hits[0].headers["Content-Type"].startswith("application/x-www-form-urlencoded")
            assert gw.hits[0].headers["I-Twilio-Idempotency-Token"]
            assert fake.status_of(ok.sid or "") == "delivered"
            assert fake.status_of(lost.sid or "") == "undelivered"
            assert fake.status_of(failed.sid or "") == "failed"

    run(main())


def test_call_progress_and_a_key_press_on_the_gather_action() -> None:
    async def main() -> None:
        async with (
            receiver(gather=gather_reply()) as gw,
            FakeTwilio(ACCOUNT, TOKEN, step_s=0.01) as fake,
            twilio_client(fake) as client,
        ):
            sid = await place_call(
                client, GRID, f"{gw.base}/gather/7", status_callback=f"{gw.base}/status/7", status_callback_event=EVENTS
            )
            pressed = await fake.press_key(sid, "1")
            assert pressed.status == 200 and "您已确认处理" in pressed.body
            [gather] = gw.on("/gather/7")
            assert gather.valid and gather.url == f"{gw.base}/gather/7"
            assert gather.params["Digits"] == "1" and gather.params["CallSid"] == sid
            assert (gather.params["From"], gather.params["To"], gather.params["CallStatus"]) == (
                OURS,
                GRID,
                "in-progress",
            )
            await fake.wait_until(lambda: fake.status_of(sid) == "completed", what="the call to end")
            await fake.wait_for_webhooks(4, "call_status")
            statuses = [h.params["CallStatus"] for h in gw.on("/status/7")]
            assert statuses == ["initiated", "ringing", "in-progress", "completed"]
            assert all(h.valid for h in gw.hits)
            completed = gw.on("/status/7")[-1].params
            assert int(completed["CallDuration"]) >= 1 and completed["CallSid"] == sid
            assert [h.params["SequenceNumber"] for h in gw.on("/status/7")] == ["0", "1", "2", "3"]
            with pytest.raises(FakeTwilioError, match="ended"):
                await fake.press_key(sid, "1")

    run(main())


@pytest.mark.parametrize("outcome", ["no-answer", "busy", "failed"])
def test_unanswered_calls_end_as_twilio_says(outcome: Any) -> None:
    async def main() -> None:
        async with receiver() as gw, FakeTwilio(ACCOUNT, TOKEN, step_s=0.01) as fake, twilio_client(fake) as client:
            fake.answer_as(FAMILY, outcome)
            sid = await place_call(client, FAMILY, f"{gw.base}/gather/1", status_callback=f"{gw.base}/status/1")
            [final] = await fake.wait_for_webhooks(1, "call_status")
            assert final.params["CallStatus"] == outcome  # no events asked: "completed" only
            assert final.params["CallDuration"] == "0"
            with pytest.raises(FakeTwilioError, match="not answered"):
                await fake.press_key(sid, "1")

    run(main())


def test_answered_call_without_a_key_press_completes_after_answered_call_s() -> None:
    async def main() -> None:
        async with (
            receiver() as gw,
            FakeTwilio(ACCOUNT, TOKEN, step_s=0.01, answered_call_s=0.2) as fake,
            twilio_client(fake) as client,
        ):
            sid = await place_call(
                client,
                FAMILY,
                f"{gw.base}/gather/1",
                status_callback=f"{gw.base}/status/1",
                status_callback_event=["answered", "completed"],
            )
            hooks = await fake.wait_for_webhooks(2, "call_status", timeout_s=3.0)
            assert [h.params["CallStatus"] for h in hooks] == ["in-progress", "completed"]
            assert not gw.on("/gather")
            assert fake.status_of(sid) == "completed"

    run(main())


def test_hang_up_ends_an_answered_call() -> None:
    async def main() -> None:
        async with receiver() as gw, FakeTwilio(ACCOUNT, TOKEN, step_s=0.01) as fake, twilio_client(fake) as client:
            sid = await place_call(client, FAMILY, f"{gw.base}/gather/1", status_callback=f"{gw.base}/status/1")
            await fake.wait_until(lambda: fake.status_of(sid) == "in-progress", what="the answer")
            await fake.hang_up(sid)
            [final] = await fake.wait_for_webhooks(1, "call_status")
            assert final.params["CallStatus"] == "completed"

    run(main())


def test_answer_as_with_press_presses_by_itself() -> None:
    async def main() -> None:
        async with (
            receiver(gather=gather_reply()) as gw,
            FakeTwilio(ACCOUNT, TOKEN, step_s=0.01) as fake,
            twilio_client(fake) as client,
        ):
            fake.answer_as(GRID, "answered", press="2")
            await client.calls.create_async(to=GRID, from_=OURS, twiml=twiml_for(f"{gw.base}/gather/3"))
            [gather] = await fake.wait_for_webhooks(1, "gather")
            assert gather.params["Digits"] == "2" and gather.status == 200
            assert gw.on("/gather/3")[0].valid

    run(main())


def test_a_reply_with_another_gather_keeps_the_call_open() -> None:
    again = twiml_for("/gather/9/again")  # relative: resolved against the action that answered

    async def main() -> None:
        async with (
            receiver(**{"gather/9/again": gather_reply(), "gather/9": again}) as gw,
            FakeTwilio(ACCOUNT, TOKEN, step_s=0.01) as fake,
            twilio_client(fake) as client,
        ):
            sid = await place_call(client, GRID, f"{gw.base}/gather/9")
            first = await fake.press_key(sid, "7")
            assert first.body == again
            second = await fake.press_key(sid, "1")
            assert second.url == f"{gw.base}/gather/9/again" and second.status == 200

    run(main())


def test_redelivery_repeats_the_webhook_exactly() -> None:
    async def main() -> None:
        async with (
            receiver(gather=gather_reply()) as gw,
            FakeTwilio(ACCOUNT, TOKEN, step_s=0.01) as fake,
            twilio_client(fake) as client,
        ):
            sid = await place_call(client, GRID, f"{gw.base}/gather/4")
            first = await fake.press_key(sid, "1")
            again = await fake.redeliver(first)
            assert again.redelivery and not first.redelivery
            assert (again.url, dict(again.params), again.signature, again.idempotency_token) == (
                first.url,
                dict(first.params),
                first.signature,
                first.idempotency_token,
            )
            one, two = gw.on("/gather/4")
            assert one.valid and two.valid
            assert one.headers["X-Twilio-Signature"] == two.headers["X-Twilio-Signature"]
            assert one.headers["I-Twilio-Idempotency-Token"] == two.headers["I-Twilio-Idempotency-Token"]
            assert one.params == two.params
            last = await fake.redeliver()  # the latest webhook by default
            assert last.idempotency_token == fake.webhooks[-2].idempotency_token

    run(main())


def test_forged_key_presses_do_not_validate_and_change_nothing() -> None:
    async def main() -> None:
        async with (
            receiver(gather=gather_reply()) as gw,
            FakeTwilio(ACCOUNT, TOKEN, step_s=0.01) as fake,
            twilio_client(fake) as client,
        ):
            sid = await place_call(client, GRID, f"{gw.base}/gather/2")
            wrong = await fake.press_key(sid, "1", bad_signature=True)
            missing = await fake.press_key(sid, "1", unsigned=True)
            assert (wrong.status, missing.status) == (403, 403)
            bad, unsigned = gw.on("/gather/2")
            assert bad.headers["X-Twilio-Signature"] and not bad.valid
            signature = bad.headers["X-Twilio-Signature"]
            assert not RequestValidator(TOKEN).validate(bad.url, bad.params, signature)
            assert "X-Twilio-Signature" not in unsigned.headers and missing.signature is None
            genuine = await fake.press_key(sid, "1")  # the call went on
            assert genuine.status == 200 and gw.hits[-1].valid

    run(main())


def test_incoming_sms_reply_is_signed() -> None:
    async def main() -> None:
        async with receiver(sms="<Response><Message>ok</Message></Response>") as gw, FakeTwilio(ACCOUNT, TOKEN) as fake:
            reply = await fake.reply_sms("+447700900123", OURS, "1 A17", f"{gw.base}/sms?x=1")
            assert reply.status == 200 and "<Message>ok</Message>" in reply.body
            [hit] = gw.on("/sms")
            assert hit.valid and hit.url.endswith("/sms?x=1")
            assert (hit.params["From"], hit.params["To"]) == ("+447700900123", OURS)
            assert hit.params["Body"] == "1 A17"
            assert re.fullmatch(r"SM[0-9a-f]{32}", hit.params["MessageSid"])
            assert (hit.params["NumMedia"], hit.params["AccountSid"]) == ("0", ACCOUNT)
            forged = await fake.reply_sms("+447700900123", OURS, "1", f"{gw.base}/sms", bad_signature=True)
            assert forged.status == 403

    run(main())


def test_an_unreachable_webhook_is_recorded_not_raised() -> None:
    async def main() -> None:
        async with receiver() as gw:
            dead = gw.base  # nothing listens there once the receiver is gone
        async with FakeTwilio(ACCOUNT, TOKEN, step_s=0.01) as fake, twilio_client(fake) as client:
            await client.messages.create_async(to=FAMILY, from_=OURS, body="a", status_callback=f"{dead}/s")
            first, second = await fake.wait_for_webhooks(2)
            assert first.status == 0 and first.error and second.params["MessageStatus"] == "delivered"

    run(main())


def test_stop_cancels_pending_callbacks() -> None:
    async def main() -> None:
        async with receiver() as gw:
            fake = FakeTwilio(ACCOUNT, TOKEN, step_s=5.0)
            await fake.start()
            async with twilio_client(fake) as client:
                await client.messages.create_async(to=FAMILY, from_=OURS, body="a", status_callback=f"{gw.base}/s")
            started = time.monotonic()
            await fake.stop()
            assert time.monotonic() - started < 1.0 and not gw.hits

    run(main())


def test_logs_have_no_token_and_numbers_only_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="simulators.providers.twilio")

    async def main() -> None:
        async with receiver(gather=gather_reply()) as gw, FakeTwilio(ACCOUNT, TOKEN, step_s=0.01) as fake:
            async with twilio_client(fake) as client:
                await client.messages.create_async(to=FAMILY, from_=OURS, body="a", status_callback=f"{gw.base}/s")
                sid = await place_call(client, GRID, f"{gw.base}/gather")
                await fake.press_key(sid, "1")
            async with twilio_client(fake, token="wrong") as client:
                with pytest.raises(TwilioRestException):
                    await client.messages.create_async(to=FAMILY, from_=OURS, body="a")

    run(main())
    records = [r for r in caplog.records if r.name == "simulators.providers.twilio"]
    assert any(r.levelno == logging.DEBUG and FAMILY in r.getMessage() for r in records)
    for record in records:
        text = record.getMessage()
        assert TOKEN not in text
        if record.levelno > logging.DEBUG:
            assert FAMILY not in text and GRID not in text


# --- in a thread, for sync code ------------------------------------------------------------------


def test_running_in_thread_serves_a_client_on_another_loop() -> None:
    fake = FakeTwilio(ACCOUNT, TOKEN, step_s=0.01)
    with running_in_thread(fake) as running:
        assert running is fake and fake.loop is not None

        async def send() -> str:
            async with twilio_client(fake) as client:
                message = await client.messages.create_async(to=FAMILY, from_=OURS, body="hi")
                # an async wait from a loop that is not the server's
                await fake.wait_for_messages(1)
                return message.sid or ""

        sid = asyncio.run(send())
        [sent] = fake.wait_for_messages_sync(1, timeout_s=2.0)
        assert sent.sid == sid
        with pytest.raises(TimeoutError):
            fake.wait_for_calls_sync(1, timeout_s=0.05)
        with pytest.raises(FakeTwilioError):
            fake.run_blocking(fake.press_key("CA" + "0" * 32, "1"))
    assert not any(t.name == "fake-twilio" and t.is_alive() for t in threading.enumerate())


def test_key_press_from_another_loop_hops_to_the_fakes_loop() -> None:
    async def gateway_side(fake: FakeTwilio, gather_url: str) -> int:
        async with twilio_client(fake) as client:
            sid = await place_call(client, GRID, gather_url)
            return (await fake.press_key(sid, "1")).status

    async def main() -> None:
        async with receiver(gather=gather_reply()) as gw:
            fake = FakeTwilio(ACCOUNT, TOKEN, step_s=0.01)
            with running_in_thread(fake):
                status = await asyncio.to_thread(asyncio.run, gateway_side(fake, f"{gw.base}/gather/1"))
            assert status == 200 and gw.on("/gather/1")[0].valid

    run(main())
