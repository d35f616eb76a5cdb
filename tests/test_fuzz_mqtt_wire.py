"""The MQTT 5 codec under arbitrary bytes: only ``MqttProtocolError`` escapes; valid frames round-trip.

Streams are fed whole and cut at arbitrary points (``tests/fuzz_checks.check_stream``);
both ways must give the same packets, or both fail with the codec's own error.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.ingest.mqtt_wire import (
    PINGRESP,
    PUBACK,
    PUBLISH,
    SUBACK,
    ControlPacket,
    InboundPublishes,
    MqttProtocolError,
    encode_pubacks,
    encode_publish,
    encode_varint,
    parse_stream,
    suback_codes,
)
from tests.fuzz_checks import check_stream

FAST = settings(max_examples=300, deadline=None, derandomize=True)

_topics = st.text(st.characters(exclude_categories=("Cs",)), max_size=60)
_publish = st.builds(
    lambda topic, payload, qos, pid, retain: (
        ("publish", topic.encode(), payload, pid if qos else 0),
        encode_publish(topic, payload, qos=qos, packet_id=pid if qos else 0, retain=retain),
    ),
    _topics,
    st.one_of(st.binary(max_size=300), st.integers(16_370, 16_390).map(lambda n: b"p" * n)),  # varint 2|3
    st.sampled_from([0, 1]),
    st.integers(1, 0xFFFF),
    st.booleans(),
)
_puback = st.integers(0, 0xFFFF).map(lambda pid: (("control", PUBACK, pid.to_bytes(2, "big")), encode_pubacks([pid])))
_other = st.tuples(st.sampled_from([PINGRESP, SUBACK, 0x20, 0xE0]), st.binary(max_size=20)).map(
    lambda kb: (("control", kb[0], kb[1]), bytes([kb[0]]) + encode_varint(len(kb[1])) + kb[1])
)
_frames = st.lists(st.one_of(_publish, _puback, _other), max_size=8)
_cuts = st.lists(st.integers(0, 20_000), max_size=6)


@FAST
@given(data=st.binary(max_size=400), cuts=_cuts)
def test_arbitrary_bytes_raise_nothing_but_the_protocol_error(data: bytes, cuts: list[int]) -> None:
    check_stream(data, cuts)


@FAST
@given(first=st.integers(0, 255), body=st.binary(max_size=64), cuts=_cuts)
def test_any_packet_type_with_any_body(first: int, body: bytes, cuts: list[int]) -> None:
    check_stream(bytes([first]) + encode_varint(len(body)) + body, cuts)


@settings(FAST, max_examples=150)
@given(frames=_frames, cuts=_cuts)
def test_valid_frames_round_trip_whole_or_cut_anywhere(
    frames: list[tuple[tuple[object, ...], bytes]], cuts: list[int]
) -> None:
    stream = b"".join(frame for _, frame in frames)
    got = check_stream(stream, cuts)
    assert got is not None
    publishes = [f for f, _ in frames if f[0] == "publish"]
    assert list(zip(got.topics, got.payloads, got.packet_ids, strict=True)) == [p[1:] for p in publishes]
    controls: list[ControlPacket] = []
    parse_stream(bytearray(stream), InboundPublishes([], [], [], []), controls)
    assert [(c.kind, c.body) for c in controls] == [f[1:] for f, _ in frames if f[0] == "control"]


@settings(FAST, max_examples=150)
@given(
    frames=_frames,
    edits=st.lists(
        st.tuples(st.integers(0, 2000), st.integers(0, 255), st.sampled_from(["flip", "insert", "delete"])),
        min_size=1,
        max_size=4,
    ),
    cuts=_cuts,
)
def test_damaged_valid_streams_raise_nothing_but_the_protocol_error(
    frames: list[tuple[tuple[object, ...], bytes]], edits: list[tuple[int, int, str]], cuts: list[int]
) -> None:
    data = bytearray(b"".join(frame for _, frame in frames) or b"\x30\x05")
    for pos, value, how in edits:
        pos %= len(data) + 1
        if how == "insert" or pos == len(data):
            data[pos:pos] = bytes([value])
        elif how == "flip":
            data[pos] ^= value or 1
        else:
            del data[pos]
    check_stream(bytes(data), cuts)


@FAST
@given(body=st.binary(max_size=12))
def test_suback_codes_of_any_body(body: bytes) -> None:
    try:
        codes = suback_codes(body)
    except MqttProtocolError:
        return
    assert all(0 <= c <= 255 for c in codes)


# -- regressions: each raised IndexError or misparsed silently before ---------------------------


@pytest.mark.parametrize(
    ("stream", "what"),
    [
        (bytes([PUBLISH, 0]), "PUBLISH frame without a topic"),  # IndexError
        (bytes([PUBLISH | 2, 3, 0, 1, 0x61]), "shorter than its header"),  # QoS 1, no packet id: IndexError
        # topic length 200 in a 4-byte frame, then a PINGRESP: the topic swallowed the next packet
        (bytes([PUBLISH, 4, 0, 200, 0x61, 0]) + bytes([PINGRESP, 0]) + b"x" * 200, "shorter than its header"),
        (bytes([PUBLISH, 4, 0, 1, 0x61, 0x05]) + b"abcdefgh", "properties longer than the frame"),
        (bytes([PUBLISH, 7, 0, 1, 0x61, 0x80, 0x80, 0x80, 0x80]), "properties length is malformed"),
        (bytes([PUBLISH | 6, 5, 0, 1, 0x61, 0, 1]), "QoS 3"),
        (bytes([PUBACK, 0]), "PUBACK without a packet id"),  # IndexError later, in the client's handler
    ],
)
def test_regression_malformed_frames_are_protocol_errors(stream: bytes, what: str) -> None:
    with pytest.raises(MqttProtocolError, match=what):
        parse_stream(bytearray(stream), InboundPublishes([], [], [], []), [])


@pytest.mark.parametrize("body", [b"", b"\x00", b"\x00\x01", b"\x00\x01\x80", b"\x00\x01\x05\x00"])
def test_regression_short_suback_is_a_protocol_error(body: bytes) -> None:
    with pytest.raises(MqttProtocolError):
        suback_codes(body)
