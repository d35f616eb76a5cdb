"""Twilio webhooks under arbitrary input: never a 500; bad signatures 403; signed junk a 4xx.

The app is the real ``webhook_app`` over a real database and ``AlertEngine`` (an open
SOS alert with its pages, so signed requests reach the alert paths), called in-process
through httpx's ASGI transport (``tests/fuzz_checks.start_webhooks``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.storage.schema import upgrade
from tests.fuzz_checks import (
    GRID,
    PUBLIC_URL,
    SIGN_MODES,
    SIGNER,
    SON,
    Webhooks,
    check_form_webhook,
    check_raw_webhook,
    start_webhooks,
)

FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def webhooks(database: str) -> Iterator[Webhooks]:
    upgrade(database)
    hooks = start_webhooks(database)
    try:
        yield hooks
    finally:
        hooks.close()
        hooks.loop.close()


# Text Twilio would never send (NUL, controls, astral planes) but an HTTP client can.
_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
_field_names = st.sampled_from(
    [
        "MessageSid",
        "CallSid",
        "From",
        "To",
        "Body",
        "Digits",
        "CallStatus",
        "MessageStatus",
        "AccountSid",
        "SmsSid",
        "msg",
    ]
)
_values = st.one_of(
    _text,
    st.sampled_from(
        [
            "1",
            "2",
            "3",
            "1 A1",
            "a1",
            "3 1",
            SON,
            GRID,
            "completed",
            "no-answer",
            "delivered",
            "failed",
            "",
            "\x00",
            "1\x00",
            "SM\x00",
        ]
    ),
    st.integers(-(2**70), 2**70).map(str),
)
_params = st.dictionaries(st.one_of(_field_names, _text.filter(bool)), _values, max_size=8)


@st.composite
def _paths(draw: st.DrawFn) -> str:
    nid = draw(st.one_of(st.sampled_from([1, 2, 3, 4, 5]), st.integers(0, 2**80)))
    path = draw(
        st.sampled_from(
            [
                "/twilio/sms",
                f"/twilio/voice/gather/{nid}",
                f"/twilio/status/{nid}",
                "/twilio/voice/gather/x",
                "/twilio/",
                "/twilio/sms/",
            ]
        )
    )
    query_string = draw(
        st.one_of(
            st.just(""),
            st.dictionaries(_text.filter(bool), _text, max_size=2).map(lambda q: "?" + urlencode(q) if q else ""),
        )
    )
    return path + query_string


_content_types = st.sampled_from(
    [
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=UTF-8",
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "multipart/form-data; boundary=xyz",
        "multipart/form-data; boundary=xyz; charset=nope",
        "application/json",
        "text/plain",
        "",
    ]
)


@FUZZ
@given(path=_paths(), params=_params, sign=st.sampled_from(SIGN_MODES), garbage=st.binary(max_size=30))
@example(path="/twilio/sms", params={"MessageSid": "SM\x00", "From": SON, "Body": "1"}, sign="valid", garbage=b"")
@example(path="/twilio/voice/gather/1", params={"CallSid": "CA1", "Digits": "1\x00"}, sign="valid", garbage=b"")
@example(path="/twilio/sms", params={"Body": "1"}, sign="valid", garbage=b"")
def test_form_webhooks_answer_403_for_bad_signatures_4xx_for_signed_junk_and_never_500(
    webhooks: Webhooks, path: str, params: dict[str, str], sign: str, garbage: bytes
) -> None:
    check_form_webhook(webhooks, path, params, sign, garbage)


@FUZZ
@given(
    path=_paths(),
    body=st.one_of(st.binary(max_size=300), _params.map(lambda p: urlencode(p).encode())),
    content_type=_content_types,
    signature=st.one_of(st.none(), st.binary(max_size=40), st.just("valid")),
    extra=st.dictionaries(
        st.sampled_from(["X-Forwarded-Proto", "Content-Encoding", "Accept", "Cookie"]),
        st.binary(max_size=12),
        max_size=2,
    ),
)
def test_arbitrary_bodies_and_headers_never_cause_a_500(
    webhooks: Webhooks,
    path: str,
    body: bytes,
    content_type: str,
    signature: bytes | str | None,
    extra: dict[str, bytes],
) -> None:
    headers: dict[str, str | bytes] = {"Content-Type": content_type} if content_type else {}
    if signature == "valid":  # signed over no parameters: right for a body that parses to nothing
        headers["X-Twilio-Signature"] = SIGNER.compute_signature(PUBLIC_URL + path, {})
    elif signature is not None:
        headers["X-Twilio-Signature"] = signature
    headers.update(extra)
    check_raw_webhook(webhooks, path, body, headers)


def _signed(path: str, params: dict[str, str]) -> dict[str, str | bytes]:
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": SIGNER.compute_signature(PUBLIC_URL + path, params),
    }


def _alert_states(webhooks: Webhooks) -> list[tuple[Any, ...]]:
    with psycopg.connect(webhooks.pool.conninfo) as conn:
        return conn.execute("SELECT state FROM alerts").fetchall()


def test_regression_nul_in_a_signed_form_is_a_400_not_a_database_error(webhooks: Webhooks) -> None:
    """PostgreSQL text cannot hold NUL: a NUL in MessageSid, From, Digits or CallSid was a 500."""
    nid = webhooks.notification_ids[0]
    for path, params in [
        ("/twilio/sms", {"MessageSid": "SM1\x00", "From": SON, "Body": "1"}),
        ("/twilio/sms", {"MessageSid": "SM2", "From": SON + "\x00", "Body": "1"}),
        (f"/twilio/voice/gather/{nid}", {"CallSid": "CA1", "Digits": "1\x00"}),
        (f"/twilio/status/{nid}", {"CallSid": "CA1\x00", "CallStatus": "busy"}),
    ]:
        response = webhooks.post(path, urlencode(params).encode(), _signed(path, params))
        assert response.status_code == 400, (path, response.status_code, response.text)


def test_regression_signed_requests_without_their_ids_are_a_400(webhooks: Webhooks) -> None:
    """A reply with no MessageSid or From cannot be deduplicated or matched: refused, not taken."""
    nid = webhooks.notification_ids[0]
    for path, params in [
        ("/twilio/sms", {"Body": "1", "From": SON}),
        ("/twilio/sms", {"Body": "1", "MessageSid": "S"}),
        (f"/twilio/voice/gather/{nid}", {"Digits": "1"}),
        (f"/twilio/status/{nid}", {"CallStatus": "busy"}),
    ]:
        response = webhooks.post(path, urlencode(params).encode(), _signed(path, params))
        assert response.status_code == 400, response.text
    assert _alert_states(webhooks) == [("notifying",)]


def test_a_signed_well_formed_reply_still_takes_the_alert(webhooks: Webhooks) -> None:
    params = {"MessageSid": "SM-ok", "From": SON, "Body": "1"}
    response = webhooks.post("/twilio/sms", urlencode(params).encode(), _signed("/twilio/sms", params))
    assert response.status_code == 200 and "A1" in response.text
    assert _alert_states(webhooks) == [("acknowledged",)]


def test_a_key_press_naming_another_call_does_not_take_the_alert(webhooks: Webhooks) -> None:
    """A signed press whose CallSid is not the call this notification was placed as: ignored."""
    first, second = webhooks.notification_ids[:2]
    path = f"/twilio/voice/gather/{first}"
    for other in (f"CA{second}", "CA-somebody-else", ""):
        params = {"CallSid": other, "Digits": "1"} if other else {"Digits": "1"}
        response = webhooks.post(path, urlencode(params).encode(), _signed(path, params))
        assert response.status_code in (200, 400), response.text
    status = f"/twilio/status/{first}"
    params = {"CallSid": f"CA{second}", "CallStatus": "busy"}
    assert webhooks.post(status, urlencode(params).encode(), _signed(status, params)).status_code == 200
    assert _alert_states(webhooks) == [("notifying",)]
    with psycopg.connect(webhooks.pool.conninfo) as conn:
        statuses = conn.execute("SELECT status FROM notifications WHERE id = %s", (first,)).fetchall()
    assert statuses != [("no_answer",)]
    # the call it was placed as: taken
    params = {"CallSid": f"CA{first}", "Digits": "1"}
    assert webhooks.post(path, urlencode(params).encode(), _signed(path, params)).status_code == 200
    assert _alert_states(webhooks) == [("acknowledged",)]


def test_an_unsigned_huge_body_is_refused_before_it_is_read(webhooks: Webhooks) -> None:
    """102 MB unsigned to /twilio/sms: 413 after at most 64 KiB, whether declared or streamed."""
    consumed = 0

    async def body() -> Any:
        nonlocal consumed
        for _ in range(102):
            consumed += 1
            yield b"Body=" + b"x" * (1024 * 1024 - 5)

    response = webhooks.loop.run_until_complete(
        webhooks.client.post(
            "/twilio/sms", content=body(), headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
    )
    assert response.status_code == 413 and consumed <= 2, (response.status_code, consumed)
    declared = webhooks.post(
        "/twilio/sms",
        b"Body=x",
        {"Content-Type": "application/x-www-form-urlencoded", "Content-Length": str(102 * 1024 * 1024)},
    )
    assert declared.status_code == 413
