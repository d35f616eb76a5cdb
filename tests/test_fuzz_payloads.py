"""Device payloads under arbitrary input (issue #8): nothing escapes, every refusal has a reason.

Valid payloads are generated from the contract structs themselves (``msgspec.inspect``),
so a new field or bound is fuzzed without touching this file; they are then mutated
field by field (bounds, huge numbers, NaN/Infinity tokens, surrogate escapes, NUL,
deep nesting), byte by byte, or rewritten as SenML packs. The invariants are in
``tests/fuzz_checks.py`` (shared with ``bench/fuzz.py``).
"""

from __future__ import annotations

import asyncio
import math
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from psycopg_pool import AsyncConnectionPool

from devices.codec import Rejected, Route, decode_payload, route_topic
from devices.contracts import (
    CONTRACTS,
    BloodPressureReading,
    DeviceStatus,
    GlucoseReading,
    Payload,
    WristbandTelemetry,
    ts_to_ms,
)
from devices.senml import UNITS
from gateway.pipeline.batch import RawBatch
from gateway.pipeline.decode import BatchDecoder, DecodeLimits
from gateway.storage.schema import upgrade
from gateway.storage.writer import TelemetryWriter
from tests.fuzz_checks import NOW_MS, ROUTES, check_batch, check_payload
from tests.support import query

pytestmark = pytest.mark.slow

NOW = datetime.fromtimestamp(NOW_MS / 1000, UTC)
FAST = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
DAY_MS = 86_400_000
DEVICE_IDS = ["dev-1", "wb-000123", "A", "x" * 64]

# -- contract-derived strategies ---------------------------------------------------------------


def _strategy(info: mi.Type) -> st.SearchStrategy[Any]:
    """Values the type accepts (lists kept short so examples stay small)."""
    if isinstance(info, mi.Metadata):
        return _strategy(info.type)
    if isinstance(info, mi.IntType):
        low = info.ge if info.ge is not None else (info.gt + 1 if info.gt is not None else -(2**40))
        high = info.le if info.le is not None else (info.lt - 1 if info.lt is not None else 2**40)
        return st.integers(low, high)
    if isinstance(info, mi.FloatType):
        return st.floats(
            min_value=info.ge if info.ge is not None else info.gt,
            max_value=info.le if info.le is not None else info.lt,
            exclude_min=info.gt is not None,
            exclude_max=info.lt is not None,
            allow_nan=False,
            allow_infinity=False,
        )
    if isinstance(info, mi.BoolType):
        return st.booleans()
    if isinstance(info, mi.NoneType):
        return st.none()
    if isinstance(info, mi.StrType):
        chars = st.characters(exclude_categories=("Cs",))
        text = st.from_regex(info.pattern, fullmatch=True, alphabet=chars) if info.pattern else st.text(chars)
        return text.filter(lambda s: len(s) <= (info.max_length or 1000) and len(s) >= (info.min_length or 0))
    if isinstance(info, mi.LiteralType):
        return st.sampled_from(info.values)
    if isinstance(info, mi.UnionType):
        return st.one_of(*[_strategy(t) for t in info.types])
    if isinstance(info, mi.ListType):
        low = info.min_length or 0
        return st.lists(_strategy(info.item_type), min_size=low, max_size=min(info.max_length or 4, max(low, 4)))
    if isinstance(info, mi.DateTimeType):
        return st.datetimes(timezones=st.just(UTC))
    if isinstance(info, mi.StructType):
        return st.fixed_dictionaries(
            {f.encode_name: _strategy(f.type) for f in info.fields if f.required},
            optional={f.encode_name: _strategy(f.type) for f in info.fields if not f.required},
        )
    raise NotImplementedError(f"no strategy for {info!r}: extend _strategy for the new contract type")


def _fields(contract: type[Payload]) -> dict[str, mi.Type]:
    info = mi.type_info(contract)
    assert isinstance(info, mi.StructType)
    return {f.encode_name: f.type for f in info.fields}


_offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
_ts_in_window = st.one_of(
    st.integers(NOW_MS - 7 * DAY_MS + 1000, NOW_MS + 4 * 60_000),
    st.tuples(st.integers(NOW_MS - 6 * DAY_MS, NOW_MS + 4 * 60_000), _offsets).map(
        lambda t: datetime.fromtimestamp(t[0] // 1000, t[1]).isoformat()
    ),
)


@st.composite
def good_payload(draw: st.DrawFn, contract: type[Payload], device_id: str) -> dict[str, Any]:
    """A payload the gateway must accept and keep: type-valid, in the time window, plausible."""
    value: dict[str, Any] = draw(_strategy(mi.type_info(contract)))
    value["ts"] = draw(_ts_in_window)
    if contract is DeviceStatus and draw(st.booleans()):
        del value["ts"]  # a will message: the receive time is used
    if "device_id" in value:
        value["device_id"] = draw(st.sampled_from([None, device_id]))
    if contract is GlucoseReading:
        mmol = draw(st.floats(0.51, 55.0))
        value["glucose"] = mmol * 18 if value.get("unit") == "mg/dL" else mmol
    if contract is BloodPressureReading:
        value["diastolic"] = draw(st.floats(20.0, 250.0))
        value["systolic"] = draw(st.floats(max(40.0, value["diastolic"] + 0.5), 320.0))
        if value["systolic"] <= value["diastolic"]:
            value["systolic"], value["diastolic"] = 320.0, 20.0
    return value


def _bounds(info: mi.Type) -> list[Any]:
    """The edges of a numeric field and just past them."""
    while isinstance(info, mi.Metadata | mi.UnionType):
        info = (
            info.type
            if isinstance(info, mi.Metadata)
            else next((t for t in info.types if not isinstance(t, mi.NoneType)), mi.NoneType())
        )
    out: list[Any] = []
    if isinstance(info, mi.IntType | mi.FloatType):
        for edge in (info.ge, info.le, info.gt, info.lt):
            if edge is not None:
                out += [edge, edge - 1, edge + 1]
                if isinstance(info, mi.FloatType):
                    out += [math.nextafter(edge, -math.inf), math.nextafter(edge, math.inf)]
    return out


_RAW_TOKENS = [
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1e999",
    b"-1e999",
    b"1e-999",
    b"-0",
    b"0.0e0",
    b"9" * 400,
    b"-" + b"9" * 30,
    b"18446744073709551616",
    b"9223372036854775808",
    b"-9223372036854775809",
    b'"\\ud800"',
    b'"\\udfff\\ud800"',
    b'"\\u0000"',
    b'"a\\u0000b"',
    b'"\\n\\t"',
    b'"\\uffff"',
    b"[" * 200 + b"]" * 200,
    b'{"a":' * 100 + b"1" + b"}" * 100,
    b"true",
    b"null",
    b"{}",
    b"[]",
    b'""',
    b'"2026-13-45T25:61:61Z"',
    b'"2026-11-18T00:00:00"',
    b'"9999-12-31T23:59:59-14:00"',
    b'"0001-01-01T00:00:00+14:00"',
]
_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=80),
)


def _json_containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4))


_json = st.recursive(_json_scalars, _json_containers, max_leaves=12)
_nasty = st.one_of(_json, st.sampled_from(_RAW_TOKENS).map(msgspec.Raw))


def encode(value: Any) -> bytes:
    """JSON with ``msgspec.Raw`` tokens spliced in as they are (NaN, 1e999, surrogate escapes...)."""
    return msgspec.json.encode(value)


@st.composite
def mutated_payload(draw: st.DrawFn, contract: type[Payload]) -> bytes:
    value = draw(good_payload(contract, "dev-1"))
    fields = _fields(contract)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["bound", "replace", "delete", "unknown", "nest"]))
        name = draw(st.sampled_from(sorted(fields)))
        if op == "bound" and _bounds(fields[name]):
            value[name] = draw(st.sampled_from(_bounds(fields[name])))
        elif op == "replace":
            value[name] = draw(_nasty)
        elif op == "delete":
            value.pop(name, None)
        elif op == "unknown":
            value[draw(st.text(max_size=6))] = draw(_nasty)
        else:
            depth = draw(st.integers(1, 5000))
            value["extra"] = msgspec.Raw(b"[" * depth + b"]" * depth)
    data = encode(value)
    if draw(st.booleans()):  # and some damage to the bytes themselves
        pos = draw(st.integers(0, len(data)))
        data = draw(
            st.sampled_from(
                [
                    data[:pos],
                    data[:pos] + draw(st.binary(min_size=1, max_size=4)) + data[pos:],
                    data[:pos] + data[pos + 1 :],
                    b"\xef\xbb\xbf" + data,
                    b" \n\t" + data,
                ]
            )
        )
    return data


def senml_pack(value: dict[str, Any], now_ms: int, base_name: str, relative: bool) -> list[dict[str, Any]]:
    """The same reading as a SenML pack (accel windows have no SenML form and are left out)."""
    ms = ts_to_ms(msgspec.convert(value.get("ts"), int | datetime | None), now_ms)  # type: ignore[arg-type]
    records: list[dict[str, Any]] = []
    for name, field in value.items():
        if name in ("ts", "accel", "unit") or field is None:
            continue
        record: dict[str, Any] = {"n": name}
        if isinstance(field, bool):
            record["vb"] = field
        elif isinstance(field, str):
            record["vs"] = field
        else:
            record["v"] = field
        if name == "glucose":
            record["u"] = value.get("unit", "mmol/L")
        elif name in UNITS:
            record["u"] = sorted(UNITS[name])[0]
        records.append(record)
    if not records:
        records.append({"n": "unknown_but_named", "v": 0})
    records[0]["bn"] = base_name
    if relative:
        records[0]["bt"] = (ms - now_ms) / 1000
    elif value.get("ts") is not None:
        records[0]["bt"] = ms / 1000
    return records


_senml_record = st.fixed_dictionaries(
    {},
    optional={
        "bn": st.one_of(st.text(max_size=12), _nasty),
        "bt": st.one_of(st.floats(), _nasty),
        "bu": st.one_of(st.sampled_from(["%", "mmHg", "Cel", "mg/dL", "beat/min"]), _nasty),
        "n": st.one_of(
            st.sampled_from(["hr", "spo2", "lat", "glucose", "battery", "ts", "device_id", "", ":", "a/"]),
            st.text(max_size=8),
            _nasty,
        ),
        "u": st.one_of(st.sampled_from(["%", "mmHg", "lat", "m", "mmol/L", "/min"]), _nasty),
        "v": st.one_of(st.floats(), _nasty),
        "vs": st.one_of(st.text(max_size=8), _nasty),
        "vb": st.one_of(st.booleans(), _nasty),
        "t": st.one_of(st.floats(), st.integers(-(2**40), 2**40), _nasty),
    },
)
_senml_junk = st.lists(_senml_record, max_size=6).map(encode)

_route_items = sorted(CONTRACTS.items())
_topics_any = st.one_of(
    st.sampled_from(ROUTES),
    st.text(max_size=60),
    st.builds(
        lambda t, d, c: f"eldercare/v1/{t}/{d}/{c}",
        st.sampled_from(["wristband", "pager", "glucose", "bp", "toaster", "", "WRISTBAND"]),
        st.one_of(st.sampled_from(DEVICE_IDS), st.text(max_size=70)),
        st.sampled_from(["telemetry", "event", "status", "cmd", "", "telemetry/x"]),
    ),
)


@st.composite
def any_message(draw: st.DrawFn) -> tuple[str, bytes]:
    (device_type, channel), contract = draw(st.sampled_from(_route_items))
    payload = draw(
        st.one_of(
            mutated_payload(contract),
            st.binary(max_size=200),
            _json.map(encode),
            _senml_junk,
            good_payload(contract, "dev-1").map(lambda v: encode(senml_pack(v, NOW_MS, "", True))),
        )
    )
    topic = draw(st.one_of(st.just(f"eldercare/v1/{device_type}/dev-1/{channel}"), _topics_any))
    return topic, payload


@st.composite
def good_message(draw: st.DrawFn) -> tuple[str, bytes]:
    (device_type, channel), contract = draw(st.sampled_from(_route_items))
    device_id = draw(st.sampled_from(DEVICE_IDS))
    value = draw(good_payload(contract, device_id))
    if draw(st.integers(0, 3)) == 0 and channel != "event":
        payload = encode(
            senml_pack(value, NOW_MS, draw(st.sampled_from(["", "urn:dev:mac:0024befffe804ff1:"])), draw(st.booleans()))
        )
    else:
        payload = encode(value)
    return f"eldercare/v1/{device_type}/{device_id}/{channel}", payload


# -- properties --------------------------------------------------------------------------------


@FAST
@given(topic=_topics_any, payload=st.one_of(st.binary(max_size=300), _json.map(encode), _senml_junk))
@example(topic=ROUTES[0], payload=b'{"ts": 18446744073709551615}')
@example(topic=ROUTES[0], payload=b'[{"n": "hr", "v": 70, "bt": 1e308, "t": 1e308}]')
def test_arbitrary_bytes_and_json_give_records_or_a_reason(topic: str, payload: bytes) -> None:
    check_payload(topic, payload)


@FAST
@given(message=any_message())
def test_mutated_contract_payloads_give_records_or_a_reason(message: tuple[str, bytes]) -> None:
    check_payload(*message)


@settings(FAST, max_examples=100)
@given(message=good_message())
def test_every_valid_payload_is_accepted(message: tuple[str, bytes]) -> None:
    result = check_payload(*message)
    assert not isinstance(result, Rejected), (message, result)


@settings(FAST, max_examples=100)
@given(
    data=st.data(),
    contract_key=st.sampled_from([k for k in sorted(CONTRACTS) if k[1] != "event"]),
    relative=st.booleans(),
    base=st.sampled_from(["", "urn:dev:mac:0024befffe804ff1:", "dev/"]),
)
def test_a_senml_pack_decodes_to_the_same_record_as_its_plain_json(
    data: st.DataObject, contract_key: tuple[str, str], relative: bool, base: str
) -> None:
    contract = CONTRACTS[contract_key]
    value = data.draw(good_payload(contract, "dev-1"))
    value.pop("accel", None)
    route = route_topic(f"eldercare/v1/{contract_key[0]}/dev-1/{contract_key[1]}")
    assert isinstance(route, Route)
    plain = decode_payload(encode(value), route, NOW_MS)
    pack = decode_payload(encode(senml_pack(value, NOW_MS, base, relative)), route, NOW_MS)
    assert isinstance(plain, list) and isinstance(pack, list), (plain, pack)
    (a,), (b,) = plain, pack
    assert ts_to_ms(a.ts, NOW_MS) == ts_to_ms(b.ts, NOW_MS)
    for name in _fields(contract):
        if name != "ts":
            assert getattr(a, name) == getattr(b, name), name


@settings(FAST, max_examples=40)
@given(
    messages=st.lists(
        st.one_of(good_message().map(lambda m: (True, m)), any_message().map(lambda m: (False, m))),
        min_size=1,
        max_size=12,
    )
)
def test_batch_keeps_the_good_and_dead_letters_each_bad_one_with_a_reason(
    messages: list[tuple[bool, tuple[str, bytes]]],
) -> None:
    topics, payloads, good = [], [], set()
    for is_good, (topic, payload) in messages:
        if is_good:
            good.add(len(topics))
        topics.append(topic.encode("utf-8", errors="surrogatepass"))
        payloads.append(payload)
    check_batch(topics, payloads, frozenset(good))


@FAST
@given(topics=st.lists(st.binary(max_size=60), min_size=1, max_size=5), payload=st.binary(max_size=40))
def test_batch_with_arbitrary_topic_bytes(topics: list[bytes], payload: bytes) -> None:
    check_batch(topics, [payload] * len(topics))


# -- oversize and pathological input: bounded memory, fast ------------------------------------

_M = 10 * 1024 * 1024


def _senml_records(n: int) -> bytes:
    return b"[" + b",".join(b'{"n":"hr","v":70,"t":-%d}' % i for i in range(n)) + b"]"


PATHOLOGICAL: dict[str, Callable[[], bytes]] = {
    "10 MB of junk": lambda: b"A" * _M,
    "10 MB string": lambda: b'{"ts":1,"pad":"' + b"x" * _M + b'"}',
    "JSON nested 100,000 deep": lambda: b'{"ts":1,"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "objects nested 100,000 deep": lambda: b'{"ts":1,"x":' + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"}",
    "a million-digit number": lambda: b'{"ts":' + b"9" * 1_000_000 + b"}",
    "a million-digit float": lambda: b'{"ts":1,"hr":1' + b"0" * 1_000_000 + b".5}",
    "NaN and Infinity": lambda: b'{"ts":1,"hr":NaN,"spo2":Infinity,"lat":-Infinity}',
    "SenML pack of 1e6 records": lambda: _senml_records(1_000_000),
    "invalid UTF-8": lambda: b'{"ts":1,"firmware":"' + b"\xff\xfe" * (_M // 2) + b'"}',
    "surrogate escapes": lambda: b'{"ts":1,"firmware":"' + b"\\ud800" * 200_000 + b'"}',
}


def _within(payload: bytes, limit: int) -> bytes:
    """The same pathology cut to fit under the size limit (a pack keeps whole records)."""
    if payload.startswith(b'[{"n":"hr"'):
        return _senml_records((limit - 2) // 25)
    return payload[:limit]


def _peak_and_seconds(work: Callable[[], object]) -> tuple[int, float]:
    start = time.perf_counter()
    work()  # timed without tracemalloc, which slows allocation-heavy code several times
    seconds = time.perf_counter() - start
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1], seconds
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("limit", [DecodeLimits().max_payload_bytes, 1_048_576])  # default, config maximum
@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_pathological_payloads_are_decoded_in_bounded_memory_and_time(name: str, limit: int) -> None:
    """Peak allocation is bounded by the payload limit, not by the input: a 30 MB pack costs
    what a pack at the limit costs. The SenML pack at the limit is the worst case (~17
    bytes per input byte: a record object per record), so the bound is 24x the limit."""
    decoder = BatchDecoder(DecodeLimits(max_payload_bytes=limit))
    route = route_topic(ROUTES[0])
    assert isinstance(route, Route)
    full = PATHOLOGICAL[name]()
    for payload in (full, _within(full, limit)):
        raw = RawBatch([ROUTES[0].encode()], [payload], [1], [False], NOW_MS)
        peak, seconds = _peak_and_seconds(lambda raw=raw: decoder.decode(raw))  # type: ignore[misc]
        assert peak <= 24 * limit + 256 * 1024, f"{name}: {peak:,} bytes for {len(payload):,} bytes in"
        assert seconds < 0.5 * limit / 65_536 + 0.2, f"{name}: {seconds:.2f} s"
        out = decoder.decode(raw)
        assert out.row_count or out.dead_letters[0].reason
        if len(payload) <= limit:  # what the batch decoder lets through is bounded the same way alone
            peak, seconds = _peak_and_seconds(lambda p=payload: decode_payload(p, route, NOW_MS))  # type: ignore[misc]
            assert peak <= 24 * limit + 256 * 1024, f"{name}: {peak:,} bytes alone"


# -- regressions -------------------------------------------------------------------------------


def test_regression_a_ts_beyond_int64_is_a_dead_letter_not_a_crashed_decode_stage() -> None:
    """``{"ts": 18446744073709551615}`` decoded, then overflowed the int64 time column and took
    the whole decode stage (and so the gateway) down, at every redelivery."""
    payloads = [
        b'{"ts": 18446744073709551615}',
        b'{"ts": 9223372036854775808}',
        b'{"ts": -1}',
        b'[{"n": "hr", "v": 70, "bt": 1e300}]',
        b'{"ts": %d, "hr": 70}' % NOW_MS,
    ]
    out = check_batch([ROUTES[0].encode()] * len(payloads), payloads, frozenset({4}))
    assert [d.index for d in out.dead_letters] == [0, 1, 2, 3]
    assert "$.ts" in out.dead_letters[0].reason and out.row_count == 1


def test_regression_senml_integer_fields_are_accepted() -> None:
    """``v`` was decoded as a float, so ``steps`` (an int field) was refused in every SenML pack."""
    route = route_topic(ROUTES[0])
    assert isinstance(route, Route)
    got = decode_payload(b'[{"n": "steps", "v": 3150, "u": "count"}, {"n": "hr", "v": 72}]', route, NOW_MS)
    assert isinstance(got, list) and got[0].steps == 3150 and got[0].hr == 72.0
    half = decode_payload(b'[{"n": "steps", "v": 3150.5}]', route, NOW_MS)
    assert isinstance(half, Rejected) and "$.steps" in half.reason


def test_regression_senml_time_overflow_has_a_senml_reason() -> None:
    route = route_topic(ROUTES[0])
    assert isinstance(route, Route)
    got = decode_payload(b'[{"n": "hr", "v": 70, "bt": 1e308, "t": 1e308}]', route, NOW_MS)
    assert isinstance(got, Rejected) and "time out of range" in got.reason


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        ("eldercare/v1/pager/pg-1/event", b'{"ts": NOW, "event": "received", "alert": "A1\\u0000"}'),
        ("eldercare/v1/wristband/wb-1/status", b'{"ts": NOW, "firmware": "1.2\\u0000"}'),
        ("eldercare/v1/glucose/gl-1/event", b'{"ts": NOW, "event": "error", "code": "E\\n1"}'),
        ("eldercare/v1/wristband/wb-1/status", b'[{"n": "firmware", "vs": "\\u0000"}]'),
    ],
)
def test_regression_nul_in_a_text_field_is_refused_not_a_rejected_batch(
    database: str, topic: str, payload: bytes
) -> None:
    """A NUL in ``alert``/``firmware``/``code`` was accepted, then PostgreSQL refused the whole
    COPY, and every other message in the batch became a dead letter with it."""
    upgrade(database)
    good = b'{"ts": %d, "hr": 70}' % NOW_MS
    bad = payload.replace(b"NOW", str(NOW_MS).encode())
    out = check_batch([b"eldercare/v1/wristband/wb-1/telemetry", topic.encode()], [good, bad], frozenset({0}))
    assert [d.index for d in out.dead_letters] == [1]
    assert "NUL" in out.dead_letters[0].reason or "regex" in out.dead_letters[0].reason, out.dead_letters[0].reason

    async def store() -> None:
        async with AsyncConnectionPool(database, min_size=1, max_size=1, open=False) as pool:
            await TelemetryWriter(pool).write(out)

    asyncio.run(store())


def test_regression_dead_letter_topic_with_nul_is_storable() -> None:
    out = check_batch([b"eldercare/v1/\x00/x/telemetry"], [b"{}"])
    assert out.dead_letters[0].topic == "eldercare/v1/\ufffd/x/telemetry"


# -- storage: whatever the decoder accepts or refuses, PostgreSQL takes -----------------------


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(messages=st.lists(st.one_of(good_message(), any_message()), min_size=1, max_size=20))
def test_decoded_batches_are_accepted_by_postgresql(
    stored_batches: Callable[[RawBatch], None], messages: list[tuple[str, bytes]]
) -> None:
    topics = [t.encode("utf-8", errors="surrogatepass") for t, _ in messages]
    stored_batches(
        RawBatch(topics, [p for _, p in messages], list(range(1, len(messages) + 1)), [False] * len(messages), NOW_MS)
    )


@pytest.fixture
def stored_batches(database: str) -> Any:
    upgrade(database, now=NOW)  # partitions for the whole accepted window
    loop = asyncio.new_event_loop()
    pool = AsyncConnectionPool(database, min_size=1, max_size=2, open=False)
    loop.run_until_complete(pool.open())
    writer = TelemetryWriter(pool)
    decoder = BatchDecoder()

    def store(raw: RawBatch) -> None:
        decoded = decoder.decode(raw)
        loop.run_until_complete(writer.write(decoded))

    try:
        yield store
    finally:
        loop.run_until_complete(pool.close())
        loop.close()


def test_a_repeated_reading_in_a_batch_for_a_day_without_partition_is_stored_once(database: str) -> None:
    """Found by the storage property: a batch with one reading twice (a device re-sending) whose day
    has no partition yet raised a bare psycopg UniqueViolation out of ``TelemetryWriter.write``."""
    upgrade(database, now=NOW + timedelta(days=30))  # no partition covers NOW yet
    reading = b'{"ts": %d, "battery": 50}' % NOW_MS
    out = BatchDecoder().decode(
        RawBatch([b"eldercare/v1/pager/pg-1/status"] * 2, [reading] * 2, [1, 2], [False, False], NOW_MS)
    )

    async def store() -> None:
        async with AsyncConnectionPool(database, min_size=1, max_size=1, open=False) as pool:
            await TelemetryWriter(pool).write(out)

    asyncio.run(store())
    assert query(database, "SELECT count(*) FROM device_status") == [(1,)]


def test_contract_strategy_covers_every_contract() -> None:
    for contract in set(CONTRACTS.values()):
        _strategy(mi.type_info(contract))  # raises for a type the generator does not know
    assert WristbandTelemetry in CONTRACTS.values()
