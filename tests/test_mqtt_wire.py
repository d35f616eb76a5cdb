"""The MQTT 5 codec: frames split anywhere parse the same; encodings match the spec."""

from __future__ import annotations

from gateway.ingest.mqtt_wire import (
    PUBACK,
    ControlPacket,
    InboundPublishes,
    encode_connect,
    encode_pubacks,
    encode_publish,
    encode_varint,
    parse_stream,
)


def _frames() -> bytes:
    out = b""
    for i in range(20):
        payload = b"x" * (i * 37)  # crosses the one-byte remaining-length boundary
        out += encode_publish(
            f"eldercare/v1/wristband/wb-{i}/telemetry", payload, qos=i % 2, packet_id=i + 1 if i % 2 else 0
        )
    return out + bytes([PUBACK, 2, 0, 9])


def test_frames_split_at_every_byte_parse_identically() -> None:
    stream = _frames()
    whole = InboundPublishes([], [], [], [])
    controls: list[ControlPacket] = []
    assert parse_stream(bytearray(stream), whole, controls) == len(stream)
    assert len(whole) == 20 and controls == [ControlPacket(PUBACK, b"\x00\x09")]
    for cut in range(1, len(stream)):
        got = InboundPublishes([], [], [], [])
        buf = bytearray(stream[:cut])
        used = parse_stream(buf, got, [])
        del buf[:used]
        buf += stream[cut:]
        parse_stream(buf, got, [])
        assert got.topics == whole.topics and got.payloads == whole.payloads
        assert got.packet_ids == whole.packet_ids


def test_packet_ids_and_qos() -> None:
    got = InboundPublishes([], [], [], [])
    parse_stream(bytearray(_frames()), got, [])
    assert got.packet_ids[:4] == [0, 2, 0, 4]
    assert got.payloads[3] == b"x" * 111


def test_varint_and_pubacks_follow_the_spec() -> None:
    assert encode_varint(0) == b"\x00"
    assert encode_varint(127) == b"\x7f"
    assert encode_varint(128) == b"\x80\x01"
    assert encode_varint(16_383) == b"\xff\x7f"
    assert encode_varint(2_097_151) == b"\xff\xff\x7f"
    assert encode_pubacks([1, 258]) == b"\x40\x02\x00\x01\x40\x02\x01\x02"


def test_connect_asks_for_a_persistent_session_and_a_large_receive_maximum() -> None:
    packet = encode_connect("gw", keepalive_s=30, clean_start=False, session_expiry_s=3600, receive_maximum=65_535)
    assert packet[0] == 0x10
    body = packet[2:]
    assert body[:6] == b"\x00\x04MQTT" and body[6] == 5
    assert body[7] & 0x02 == 0  # clean start off
    assert b"\x11\x00\x00\x0e\x10" in body  # session expiry 3600
    assert b"\x21\xff\xff" in body  # receive maximum 65535
