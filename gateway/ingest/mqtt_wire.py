"""The few MQTT 5 packets the gateway's ingest connection speaks, encoded and parsed.

Why our own codec: the gateway must acknowledge a QoS 1 message only once it is
durable, and do so for thousands of messages at a time. The Python clients that can
acknowledge by hand do it one message at a time: paho-mqtt 2 (``manual_ack=True``,
``client.ack(mid, qos)``; it also reads each frame header a byte per ``recv``), aiomqtt 3
(alpha, on the Rust ``mqtt5`` codec: ``await client.puback(packet_id)``, a write and a
drain each), gmqtt (``optimistic_acknowledgement=False``: one task per message).
Parsing PUBLISH frames in bulk and writing one buffer of PUBACKs per durable batch is
correct and faster: 208k msg/s at 2.3 us CPU/msg against aiomqtt 3's 116k at 6.7 us,
acking per batch of 2,000 (bench/ingest.py, same run). ``mqtt5.read`` alone parses
1.7-1.9x faster than ``parse_stream`` (bench/mqtt_parse.py), see docs/own-code.md.
Only what the ingest path needs is here: CONNECT/CONNACK, SUBSCRIBE/SUBACK,
PUBLISH (both ways, QoS 0/1), PUBACK, PINGREQ/PINGRESP, DISCONNECT, and
UNSUBSCRIBE/UNSUBACK (a cluster instance leaving its shared subscription).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

CONNECT = 0x10
CONNACK = 0x20
PUBLISH = 0x30
PUBACK = 0x40
SUBSCRIBE = 0x82
SUBACK = 0x90
UNSUBSCRIBE = 0xA2
UNSUBACK = 0xB0
PINGREQ = 0xC0
PINGRESP = 0xD0
DISCONNECT = 0xE0

PROP_SESSION_EXPIRY = 0x11
PROP_RECEIVE_MAXIMUM = 0x21
PROP_MAXIMUM_PACKET_SIZE = 0x27


class MqttProtocolError(ValueError):
    """The broker sent bytes that are not the MQTT 5 we expect."""


def encode_varint(value: int) -> bytes:
    if value < 128:  # most lengths: the publish loops of the simulators call this per message
        return bytes((value,))
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_str(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("!H", len(raw)) + raw


def _packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + encode_varint(len(body)) + body


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def encode_connect(
    client_id: str,
    *,
    keepalive_s: int,
    clean_start: bool,
    session_expiry_s: int,
    receive_maximum: int,
    username: str | None = None,
    password: str | None = None,
    will: Will | None = None,
) -> bytes:
    flags = 0x02 if clean_start else 0
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    if username is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    props = (
        bytes([PROP_SESSION_EXPIRY])
        + struct.pack("!I", session_expiry_s)
        + bytes([PROP_RECEIVE_MAXIMUM])
        + struct.pack("!H", receive_maximum)
    )
    body = (
        encode_str("MQTT")
        + bytes([5, flags])
        + struct.pack("!H", keepalive_s)
        + encode_varint(len(props))
        + props
        + encode_str(client_id)
    )
    if will is not None:
        body += encode_varint(0) + encode_str(will.topic) + encode_str(will.payload)
    if username is not None:
        body += encode_str(username)
    if password is not None:
        body += encode_str(password)
    return _packet(CONNECT, body)


def encode_subscribe(packet_id: int, topic_filters: str | list[str], qos: int) -> bytes:
    filters = [topic_filters] if isinstance(topic_filters, str) else topic_filters
    body = struct.pack("!H", packet_id) + encode_varint(0)
    for topic_filter in filters:
        body += encode_str(topic_filter) + bytes([qos])
    return _packet(SUBSCRIBE, body)


def encode_unsubscribe(packet_id: int, topic_filters: list[str]) -> bytes:
    body = struct.pack("!H", packet_id) + encode_varint(0)
    for topic_filter in topic_filters:
        body += encode_str(topic_filter)
    return _packet(UNSUBSCRIBE, body)


def encode_publish(topic: str, payload: bytes, *, qos: int, packet_id: int = 0, retain: bool = False) -> bytes:
    first = PUBLISH | (qos << 1) | (1 if retain else 0)
    body = encode_str(topic) + (struct.pack("!H", packet_id) if qos else b"") + b"\x00" + payload
    return _packet(first, body)


_PUBACK_PACK = struct.Struct("!BBH")


def encode_pubacks(packet_ids: list[int]) -> bytes:
    """One buffer holding a PUBACK (reason 0: success, short form) per packet id."""
    pack = _PUBACK_PACK.pack
    return b"".join([pack(PUBACK, 2, pid) for pid in packet_ids])


PINGREQ_BYTES = bytes([PINGREQ, 0])
DISCONNECT_BYTES = bytes([DISCONNECT, 0])
# normal disconnection that also ends the session (Session Expiry Interval 0)
DISCONNECT_END_SESSION_BYTES = bytes([DISCONNECT, 7, 0x00, 5, PROP_SESSION_EXPIRY, 0, 0, 0, 0])


@dataclass(slots=True)
class InboundPublishes:
    """PUBLISH frames parsed from one read, as parallel lists (no per-message objects)."""

    topics: list[bytes]
    payloads: list[bytes]
    packet_ids: list[int]  # 0 for QoS 0
    dup: list[bool]

    def __len__(self) -> int:
        return len(self.topics)


@dataclass(frozen=True, slots=True)
class ControlPacket:
    """Any non-PUBLISH packet: its type nibble and its body."""

    kind: int
    body: bytes


def parse_stream(buf: bytearray, publishes: InboundPublishes, controls: list[ControlPacket]) -> int:
    """Parse every complete packet at the front of ``buf``; return the bytes consumed.

    PUBLISH frames are appended to ``publishes``; everything else to ``controls``.
    This is the per-message hot loop, so it avoids struct formats and objects.
    """
    pos = 0
    end = len(buf)
    topics_append = publishes.topics.append
    payloads_append = publishes.payloads.append
    ids_append = publishes.packet_ids.append
    dup_append = publishes.dup.append
    while end - pos >= 2:
        first = buf[pos]
        # remaining length: variable byte integer, at most 4 bytes
        length = 0
        shift = 0
        i = pos + 1
        while True:
            if i >= end:
                return pos
            byte = buf[i]
            length |= (byte & 0x7F) << shift
            i += 1
            if not byte & 0x80:
                break
            shift += 7
            if shift > 21:
                raise MqttProtocolError("remaining length longer than 4 bytes")
        stop = i + length
        if stop > end:
            return pos
        if first & 0xF0 == PUBLISH:
            qos = (first >> 1) & 0x03
            if qos == 3:
                raise MqttProtocolError("PUBLISH with QoS 3")
            if length < 2:
                raise MqttProtocolError("PUBLISH frame without a topic")
            topic_end = i + 2 + ((buf[i] << 8) | buf[i + 1])
            p = topic_end + 2 if qos else topic_end
            if p >= stop:  # the packet id (QoS 1, 2) and the properties length must follow
                raise MqttProtocolError("PUBLISH frame shorter than its header")
            topic = bytes(buf[i + 2 : topic_end])
            pid = (buf[topic_end] << 8) | buf[topic_end + 1] if qos else 0
            # properties: a varint length, then skipped (we never ask for topic aliases)
            plen = 0
            shift = 0
            while True:
                byte = buf[p]
                p += 1
                plen |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    break
                shift += 7
                if shift > 21 or p >= stop:
                    raise MqttProtocolError("PUBLISH properties length is malformed")
            p += plen
            if p > stop:
                raise MqttProtocolError("PUBLISH properties longer than the frame")
            topics_append(topic)
            payloads_append(bytes(buf[p:stop]))
            ids_append(pid)
            dup_append(bool(first & 0x08))
        else:
            if first & 0xF0 == PUBACK and length < 2:
                raise MqttProtocolError("PUBACK without a packet id")
            controls.append(ControlPacket(first & 0xF0, bytes(buf[i:stop])))
        pos = stop
    return pos


def connack_result(body: bytes) -> tuple[bool, int]:
    """(session present, reason code) of a CONNACK body."""
    if len(body) < 2:
        raise MqttProtocolError("CONNACK too short")
    return bool(body[0] & 0x01), body[1]


def suback_codes(body: bytes) -> list[int]:
    """Reason codes of a SUBACK body (after packet id and properties)."""
    p = 2
    plen = 0
    shift = 0
    while True:
        if p >= len(body) or shift > 21:
            raise MqttProtocolError("SUBACK too short or its properties length malformed")
        byte = body[p]
        p += 1
        plen |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
    if p + plen > len(body):
        raise MqttProtocolError("SUBACK properties longer than the packet")
    return list(body[p + plen :])
