"""Contracts and codec: both time forms, SenML packs, unit conversion, topic rules."""

from __future__ import annotations

import json

from devices.codec import Rejected, Route, decode_payload, route_topic
from devices.contracts import CONTRACTS, GlucoseReading, WristbandTelemetry, json_schema

NOW = 1_763_800_000_000


def route(topic: str) -> Route:
    r = route_topic(topic)
    assert isinstance(r, Route), r
    return r


def test_rfc3339_and_epoch_ms_are_the_same_instant() -> None:
    r = route("eldercare/v1/wristband/wb-1/telemetry")
    a = decode_payload(b'{"ts": 1763800000000, "hr": 70}', r, NOW)
    b = decode_payload(b'{"ts": "2025-11-22T16:26:40+08:00", "hr": 70}', r, NOW)
    assert isinstance(a, list) and isinstance(b, list)
    from devices.contracts import ts_to_ms

    assert ts_to_ms(a[0].ts) == ts_to_ms(b[0].ts) == 1_763_800_000_000


def test_senml_pack_with_two_times_gives_two_readings_and_relative_time() -> None:
    r = route("eldercare/v1/wristband/wb-1/telemetry")
    pack = [
        {"bn": "urn:dev:wb-1:", "bt": NOW / 1000, "n": "hr", "u": "beat/min", "v": 70},
        {"n": "hr", "t": 60, "v": 75},
    ]
    got = decode_payload(json.dumps(pack).encode(), r, NOW)
    assert isinstance(got, list) and [x.hr for x in got] == [70, 75]
    assert [x.ts for x in got] == [NOW, NOW + 60_000]
    relative = decode_payload(b'[{"n": "hr", "t": -5, "v": 80}]', r, NOW)
    assert isinstance(relative, list) and relative[0].ts == NOW - 5000


def test_glucose_in_mg_dl_is_converted_and_checked() -> None:
    r = route("eldercare/v1/glucose/g-1/telemetry")
    got = decode_payload(b'{"ts": 1, "glucose": 54, "unit": "mg/dL"}', r, NOW)
    assert isinstance(got, list) and isinstance(got[0], GlucoseReading)
    from devices.codec import glucose_mmol

    assert glucose_mmol(got[0]) == 3.0
    bad = decode_payload(b'{"ts": 1, "glucose": 2000, "unit": "mg/dL"}', r, NOW)
    assert isinstance(bad, Rejected)


def test_topic_rules() -> None:
    assert isinstance(route_topic("eldercare/v2/wristband/x/telemetry"), Rejected)
    assert isinstance(route_topic("eldercare/v1/wristband/bad id/telemetry"), Rejected)
    assert isinstance(route_topic("eldercare/v1/wristband/x/cmd"), Rejected)
    assert route("eldercare/v1/bp/cuff-7/telemetry").device_id == "cuff-7"


def test_unknown_extra_fields_are_tolerated_for_firmware_evolution() -> None:
    r = route("eldercare/v1/wristband/wb-1/telemetry")
    got = decode_payload(b'{"ts": 1, "hr": 70, "skin_temp_c": 33.1}', r, NOW)
    assert isinstance(got, list) and isinstance(got[0], WristbandTelemetry)


def test_every_contract_exports_a_json_schema() -> None:
    for device_type, channel in CONTRACTS:
        schema = json_schema(device_type, channel)
        assert "$defs" in schema and f"{device_type}/{{device_id}}/{channel}" in schema["$comment"]
