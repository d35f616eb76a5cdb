"""What must hold for any input to the parsers: shared by the hypothesis tests and bench/fuzz.py.

Each ``check_*`` takes one input, runs the real parser and raises ``AssertionError`` when
an invariant breaks (any other exception escaping is a finding too). They know nothing
of how the input was generated.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
import numpy as np
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from twilio.request_validator import RequestValidator

from devices.codec import Rejected, Route, check_record, decode_payload, route_topic
from devices.contracts import CONTRACTS, MAX_EPOCH_MS, Payload, ts_to_ms
from gateway.alerting.engine import AlertEngine
from gateway.alerting.policy import load_escalation
from gateway.config import ConfigError, load_config
from gateway.domain.registry import RegistryError, load_registry, registry_from_dicts
from gateway.ingest.mqtt_wire import ControlPacket, InboundPublishes, MqttProtocolError, parse_stream
from gateway.notify.twilio_callbacks import TwilioWebhooks, webhook_app
from gateway.pipeline.batch import DecodedBatch, RawBatch
from gateway.pipeline.decode import BatchDecoder, DecodeLimits
from gateway.storage import tables

NOW_MS = 1_795_000_000_000  # 2026-11-18: a fixed "now" keeps examples reproducible
_TEXT_KINDS = ("text",)


def check_payload(topic: str, payload: bytes, now_ms: int = NOW_MS) -> list[Payload] | Rejected:
    """``route_topic`` + ``decode_payload``: records of the topic's contract, or a reason."""
    route = route_topic(topic)
    if isinstance(route, Rejected):
        assert route.reason, f"topic {topic!r} refused without a reason"
        return route
    result = decode_payload(payload, route, now_ms)
    if isinstance(result, Rejected):
        assert isinstance(result.reason, str) and result.reason.strip(), "a refusal without a reason"
        return result
    assert result, "accepted, but no records"
    for record in result:
        assert isinstance(record, route.contract), (type(record), route.contract)
        assert check_record(record, route) is None
        assert record.device_id in (None, route.device_id)
        ms = ts_to_ms(record.ts, now_ms)
        assert -(2**63) < ms < 2**63, f"ts {ms} does not fit a timestamp column"
        if isinstance(record.ts, int):
            assert 0 <= record.ts <= MAX_EPOCH_MS
    return result


def _expected(topic: bytes, payload: bytes, limits: DecodeLimits, now_ms: int) -> tuple[int, int]:
    """(rows, dead letters) one message should become: the per-message codec as the oracle."""
    try:
        route = route_topic(topic.decode("utf-8"))
    except UnicodeDecodeError:
        return 0, 1
    if isinstance(route, Rejected) or len(payload) > limits.max_payload_bytes:
        return 0, 1
    result = decode_payload(payload, route, now_ms)
    if isinstance(result, Rejected):
        return 0, 1
    ts = [ts_to_ms(r.ts, now_ms) for r in result]
    kept = sum(now_ms - limits.max_past_ms <= t <= now_ms + limits.max_future_ms for t in ts)
    return kept, len(ts) - kept


def check_batch(
    topics: list[bytes],
    payloads: list[bytes],
    good: frozenset[int] = frozenset(),
    limits: DecodeLimits | None = None,
    now_ms: int = NOW_MS,
) -> DecodedBatch:
    """The batch decoder: nothing raised, good messages kept, every refusal a dead letter with a
    reason, and rows plus dead letters add up to what each message alone decodes to."""
    limits = limits or DecodeLimits()
    n = len(topics)
    raw = RawBatch(list(topics), list(payloads), list(range(1, n + 1)), [False] * n, now_ms)
    out = BatchDecoder(limits).decode(raw)
    indexes = [d.index for d in out.dead_letters]
    assert indexes == sorted(indexes), "dead letters out of arrival order"
    assert not good & set(indexes), f"good messages dead-lettered: {[d.reason for d in out.dead_letters]}"
    for letter in out.dead_letters:
        assert 0 <= letter.index < n
        assert isinstance(letter.reason, str) and letter.reason.strip(), "dead letter without a reason"
        assert letter.payload == payloads[letter.index][: limits.max_payload_bytes]
        for text in (letter.topic, letter.reason):  # both go to PostgreSQL text columns
            assert "\x00" not in text
            text.encode("utf-8")
    rows = [(t.spec.name, len(t)) for t in out.tables]  # one table may come once per contract
    main_rows = sum(count for name, count in rows if name != tables.ACCEL.name)
    expected_rows = 0
    for i, (topic, payload) in enumerate(zip(topics, payloads, strict=True)):
        kept, dead = _expected(topic, payload, limits, now_ms)
        expected_rows += kept
        assert indexes.count(i) == dead, (i, topic, payload[:200], dead, [d.reason for d in out.dead_letters])
    assert main_rows == expected_rows, rows
    for table in out.tables:
        check_columns_storable(table.spec.name, table.columns)
    return out


def check_columns_storable(name: str, columns: tuple[object, ...]) -> None:
    """Values the binary COPY would send: text without NUL, finite numbers, int32 in range."""
    for column in columns:
        kind, values = column.kind, column.values  # type: ignore[attr-defined]
        if kind in _TEXT_KINDS:
            for value in values:
                assert b"\x00" not in value, f"{name}: NUL in a text column"
                value.decode("utf-8")
        elif kind in ("float4", "float8"):
            assert np.isfinite(values).all(), f"{name}: a non-finite number"


def check_stream(data: bytes, cuts: list[int]) -> InboundPublishes | None:
    """The MQTT codec: fed whole or in pieces, only ``MqttProtocolError`` escapes, and both
    ways give the same packets (or both fail)."""

    def parse(pieces: list[bytes]) -> tuple[InboundPublishes, list[ControlPacket], int]:
        got, controls, buf = InboundPublishes([], [], [], []), list[ControlPacket](), bytearray()
        for piece in pieces:
            buf += piece
            used = parse_stream(buf, got, controls)
            assert 0 <= used <= len(buf)
            del buf[:used]
        return got, controls, len(buf)

    bounds = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    pieces = [data[a:b] for a, b in itertools.pairwise(bounds)]
    try:
        whole = parse([data])
    except MqttProtocolError:
        whole = None
    try:
        split = parse(pieces)
    except MqttProtocolError:
        split = None
    assert (whole is None) == (split is None), "the stream parsed one way and failed the other"
    if whole is None or split is None:
        return None
    assert whole[0] == split[0] and whole[1] == split[1] and whole[2] == split[2]
    for topic, payload, pid in zip(whole[0].topics, whole[0].payloads, whole[0].packet_ids, strict=True):
        assert isinstance(topic, bytes) and isinstance(payload, bytes) and 0 <= pid <= 0xFFFF
    return whole[0]


@contextlib.contextmanager
def _file(data: bytes, name: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="eldercare-fuzz-") as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        os.chmod(path, 0o600)
        yield path


def check_config(data: bytes, environ: dict[str, str] | None = None) -> str:
    """``load_config`` on any file: a config, or a ``ConfigError`` naming the file or variable."""
    with _file(data, "config.yaml") as path:
        try:
            load_config(path, environ=environ or {})
        except ConfigError as error:
            message = str(error)
            assert message.startswith((str(path), "ELDERCARE_", "notify.", "mqtt.", "database.")), message
            return message
    return ""


def check_registry(data: bytes) -> str:
    """``load_registry`` on any file: a registry, or a ``RegistryError`` saying where."""
    with _file(data, "registry.yaml") as path:
        try:
            load_registry(path)
        except RegistryError as error:
            message = str(error)
            assert message.startswith((str(path), "elder ", "responder ", "roster override")), message
            return message
    return ""


ROUTES: list[str] = [f"eldercare/v1/{t}/dev-1/{c}" for (t, c) in CONTRACTS]
assert all(isinstance(route_topic(t), Route) for t in ROUTES)


# -- Twilio webhooks -----------------------------------------------------------------------------

TWILIO_TOKEN = "fuzz-auth-token-not-secret"
PUBLIC_URL = "https://gateway.example.org"
SIGNER = RequestValidator(TWILIO_TOKEN)
SON, GRID = "+8613800000001", "+8613900000001"
SIGN_MODES = ("valid", "missing", "wrong", "other-url")
NOT_ROUTED = ("/twilio/sms/", "/twilio/", "/twilio/voice/gather/x")


@dataclass
class Webhooks:
    """The real webhook app over a real database with one open SOS alert and its pages,
    called in-process on one event loop that outlives the requests."""

    loop: asyncio.AbstractEventLoop
    client: httpx.AsyncClient
    pool: AsyncConnectionPool
    notification_ids: list[int]

    def post(self, path: str, body: bytes, headers: dict[str, str | bytes]) -> httpx.Response:
        raw = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in headers.items()}
        return self.loop.run_until_complete(self.client.post(path, content=body, headers=raw))

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.run_until_complete(self.pool.close())


async def _start_webhooks(dsn: str) -> Webhooks:
    registry = registry_from_dicts(
        [
            {
                "id": "e1",
                "name": "王秀英",
                "community": "c1",
                "grid": "g1",
                "contacts": [{"name": "王强", "phone": SON}],
                "devices": [{"id": "pg-1", "type": "pager"}],
            }
        ],
        [
            {"id": "grid", "name": "王芳", "role": "grid_worker", "phone": GRID, "grid": "g1"},
            {"id": "hotline", "name": "热线", "role": "hotline", "phone": "+8640000000001"},
        ],
    )
    escalation = load_escalation(
        {
            "policies": [
                {
                    "name": "sos",
                    "kinds": ["sos"],
                    "start_tiers": 2,
                    "tiers": [
                        {"roles": {"family": ["sms", "voice"]}, "wait_s": 60},
                        {"roles": {"grid_worker": ["voice"]}, "wait_s": 60},
                        {"roles": {"hotline": ["voice"]}, "wait_s": 60},
                    ],
                },
                {"name": "default", "kinds": ["*"], "tiers": [{"roles": {"hotline": ["sms"]}, "wait_s": 600}]},
            ]
        }
    )
    pool = AsyncConnectionPool(dsn, min_size=1, max_size=4, open=False)
    await pool.open()
    engine = AlertEngine(pool, escalation, registry, lambda: NOW_MS)
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO detections (elder_id, device_id, kind, severity, ts, cleared, evidence) "
            "VALUES ('e1', 'pg-1', 'sos', 'critical', to_timestamp(%s / 1000.0), false, %s)",
            (NOW_MS, Jsonb({})),
        )
    await engine.process_detections()
    await engine.run_due()
    async with pool.connection() as conn:
        # as the outbox records them once the provider accepted each page: callbacks must name these
        await conn.execute("UPDATE notifications SET provider_sid = 'CA' || id")
        cur = await conn.execute("SELECT id FROM notifications ORDER BY id")
        ids = [row[0] for row in await cur.fetchall()]
    hooks = TwilioWebhooks(pool, engine, TWILIO_TOKEN, PUBLIC_URL, lambda: NOW_MS)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=webhook_app(hooks)), base_url=PUBLIC_URL)
    return Webhooks(asyncio.get_running_loop(), client, pool, ids)


def start_webhooks(dsn: str) -> Webhooks:
    """Needs the schema (``gateway.storage.schema.upgrade``) in ``dsn``; call ``close()`` after."""
    loop = asyncio.new_event_loop()
    hooks = loop.run_until_complete(_start_webhooks(dsn))
    assert hooks.notification_ids, "the SOS paged nobody: the harness is wrong"
    return hooks


def _well_formed(path: str, params: dict[str, str]) -> bool:
    """What a real Twilio request always has: its id fields, and no NUL anywhere."""
    if any("\x00" in text for item in params.items() for text in item):
        return False
    if path.startswith("/twilio/sms"):
        return bool(params.get("MessageSid")) and bool(params.get("From"))
    if path.startswith("/twilio/voice/gather/"):
        return bool(params.get("CallSid"))
    return bool(params.get("CallSid") or params.get("MessageSid"))


def check_form_webhook(hooks: Webhooks, path: str, params: dict[str, str], sign: str, garbage: bytes) -> int:
    """A form POST as Twilio makes it, signed as ``sign`` says: 403 unless validly signed, then 200
    for what Twilio would send and 400 for anything else; 404 off the routes; never 5xx."""
    headers: dict[str, str | bytes] = {"Content-Type": "application/x-www-form-urlencoded"}
    if sign == "valid":
        headers["X-Twilio-Signature"] = SIGNER.compute_signature(PUBLIC_URL + path, params)
    elif sign == "wrong":
        headers["X-Twilio-Signature"] = garbage or b"AAAA"
    elif sign == "other-url":  # a genuine signature for another path: a replay elsewhere
        headers["X-Twilio-Signature"] = SIGNER.compute_signature(PUBLIC_URL + "/twilio/elsewhere", params)
    response = hooks.post(path, urlencode(params).encode(), headers)
    status = response.status_code
    assert status < 500, response.text
    routed = path.split("?")[0]
    if routed in NOT_ROUTED:
        assert status in (307, 404), status  # Starlette redirects /twilio/sms/ to /twilio/sms
    elif sign != "valid":
        assert status == 403, status
    elif _well_formed(routed, params):
        assert status == 200, response.text
    else:
        assert 400 <= status < 500, response.text
    return status


def check_raw_webhook(hooks: Webhooks, path: str, body: bytes, headers: dict[str, str | bytes]) -> int:
    """Any body with any headers: never 5xx."""
    response = hooks.post(path, body, headers)
    assert response.status_code < 500, response.text
    return response.status_code
