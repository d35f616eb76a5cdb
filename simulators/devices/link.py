"""A fleet's MQTT 5 connections: QoS 1 publishes written in bulk, PUBACKs counted per topic.

paho-mqtt costs tens of microseconds per message and a thread per client; a fleet of ten
thousand devices needs neither. A :class:`PublisherLink` is an asyncio protocol on one
TCP connection that carries the messages of one device (its own credentials and will)
or of many (a shared account), writes frames built here in one buffer per batch, and
keeps its in-flight count in a shared array so the fleet can apply flow control to all
links with numpy. PUBACK reason codes of 0x80 and above count as errors, not acks.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Sequence

import numpy as np

from gateway.ingest.mqtt_wire import (
    CONNACK,
    DISCONNECT_BYTES,
    PINGREQ_BYTES,
    PUBACK,
    ControlPacket,
    InboundPublishes,
    MqttProtocolError,
    Will,
    encode_connect,
    encode_str,
    parse_stream,
)
from gateway.ingest.mqtt_wire import encode_varint as _varint

_PID = [i.to_bytes(2, "big") for i in range(65_536)]
_QOS1 = b"\x32"
_QOS0 = b"\x30"
PROP_RECEIVE_MAXIMUM = 0x21
REASONS = {
    0x80: "unspecified error",
    0x81: "malformed packet",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x97: "quota exceeded",
}


class LinkRefused(ConnectionError):
    """The broker refused the CONNECT (``code``: the CONNACK reason code)."""

    def __init__(self, client_id: str, code: int) -> None:
        super().__init__(f"broker refused {client_id}: 0x{code:02x} {REASONS.get(code, '')}".rstrip())
        self.code = code


def topic_header(topic: str) -> bytes:
    """A topic as it sits in a PUBLISH (length-prefixed), encoded once per device and channel."""
    return encode_str(topic)


class LinkTable:
    """Per-link numbers the fleet reads as arrays: in flight, up, acks and errors by topic kind."""

    def __init__(self, links: int, kinds: int) -> None:
        self.inflight = np.zeros(links, np.int64)
        self.window = np.zeros(links, np.int64)
        self.up = np.zeros(links, bool)
        self.acked_by_kind = np.zeros(kinds, np.int64)
        self.sent = 0
        self.acked = 0
        self.errors = 0
        self.error_samples: list[str] = []
        self.progress = asyncio.Event()

    def error(self, count: int, text: str) -> None:
        self.errors += count
        if len(self.error_samples) < 20:
            self.error_samples.append(text)


class PublisherLink(asyncio.Protocol):
    """One connection of the fleet (slot ``index`` in the :class:`LinkTable`)."""

    def __init__(self, table: LinkTable, index: int, client_id: str, pid_space: int) -> None:
        self.table = table
        self.index = index
        self.client_id = client_id
        self.pid_space = pid_space
        self.kind_of_pid = bytearray(pid_space + 1)
        self.pid = 0
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.connack: asyncio.Future[bytes] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.last_write = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        controls: list[ControlPacket] = []
        try:
            used = parse_stream(self.buf, InboundPublishes([], [], [], []), controls)
        except MqttProtocolError as error:
            self.table.error(0, f"{self.client_id}: {error}")
            if self.transport is not None:
                self.transport.close()
            return
        del self.buf[:used]
        table = self.table
        acked = 0
        for packet in controls:
            if packet.kind == PUBACK:
                body = packet.body
                kind = self.kind_of_pid[(body[0] << 8) | body[1]]
                if len(body) > 2 and body[2] >= 0x80:
                    table.error(1, f"{self.client_id}: PUBACK 0x{body[2]:02x} {REASONS.get(body[2], '')}".rstrip())
                else:
                    acked += 1
                    table.acked_by_kind[kind] += 1
                table.inflight[self.index] -= 1
            elif packet.kind == CONNACK and not self.connack.done():
                self.connack.set_result(packet.body)
        if acked:
            table.acked += acked
        table.progress.set()

    def connection_lost(self, exc: Exception | None) -> None:
        table = self.table
        if table.up[self.index]:
            lost = int(table.inflight[self.index])
            table.error(
                lost, f"{self.client_id}: connection lost with {lost} unacknowledged" + (f" ({exc})" if exc else "")
            )
        table.up[self.index] = False
        table.inflight[self.index] = 0
        if not self.connack.done():
            self.connack.set_exception(ConnectionError(f"{self.client_id}: connection closed before CONNACK"))
        if not self.closed.done():
            self.closed.set_result(None)
        table.progress.set()

    def publish(self, topics: Sequence[bytes], payloads: Sequence[bytes], kinds: Sequence[int], qos: int = 1) -> None:
        """Write one PUBLISH per (topic header, payload); ``kinds`` says what to count each ack as."""
        assert self.transport is not None
        parts: list[bytes] = []
        pid = self.pid
        space = self.pid_space
        pids = _PID
        marks = self.kind_of_pid
        first = _QOS1 if qos else _QOS0
        for topic, payload, kind in zip(topics, payloads, kinds, strict=True):
            if qos:
                pid = pid % space + 1
                marks[pid] = kind
                parts += (first, _varint(len(topic) + len(payload) + 3), topic, pids[pid], b"\x00", payload)
            else:
                parts += (first, _varint(len(topic) + len(payload) + 1), topic, b"\x00", payload)
        self.pid = pid
        self.transport.write(b"".join(parts))
        n = len(payloads)
        if qos:
            self.table.inflight[self.index] += n
        else:
            self.table.acked += n
            for kind in kinds:
                self.table.acked_by_kind[kind] += 1
        self.table.sent += n
        self.last_write = time.monotonic()

    def write_one(self, topic: bytes, payload: bytes, kind: int) -> bool:
        """One QoS 1 PUBLISH, written at once (the caller counts it); False if the link is closed."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        pid = self.pid % self.pid_space + 1
        self.pid = pid
        self.kind_of_pid[pid] = kind
        transport.write(b"".join((_QOS1, _varint(len(topic) + len(payload) + 3), topic, _PID[pid], b"\x00", payload)))
        return True

    def ping(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(PINGREQ_BYTES)
            self.last_write = time.monotonic()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.table.up[self.index] = False
            self.transport.write(DISCONNECT_BYTES)
            self.transport.close()


def _receive_maximum(body: bytes) -> int | None:
    """The broker's Receive Maximum from a CONNACK's properties, if it sent one."""
    if len(body) < 3:
        return None
    p, length, shift = 2, 0, 0
    while True:
        byte = body[p]
        p += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
    end = p + length
    while p < end:
        prop = body[p]
        if prop == PROP_RECEIVE_MAXIMUM:
            return int(struct.unpack_from("!H", body, p + 1)[0])
        if prop in (0x11, 0x27):  # four-byte integers
            p += 5
        elif prop in (0x21, 0x22, 0x13):  # two-byte integers
            p += 3
        elif prop in (0x24, 0x25, 0x28, 0x29, 0x2A):  # bytes
            p += 2
        elif prop in (0x12, 0x1A, 0x1C, 0x1F, 0x15, 0x16):  # strings / binary
            p += 3 + struct.unpack_from("!H", body, p + 1)[0]
        elif prop == 0x26:  # user property: two strings
            k = struct.unpack_from("!H", body, p + 1)[0]
            p += 3 + k
            p += 2 + struct.unpack_from("!H", body, p)[0]
        else:
            return None
    return None


async def open_link(
    table: LinkTable,
    index: int,
    host: str,
    port: int,
    client_id: str,
    *,
    username: str | None = None,
    password: str | None = None,
    will: Will | None = None,
    keepalive_s: int = 60,
    window: int = 1000,
    timeout_s: float = 10.0,
) -> PublisherLink:
    """Connect, log in and return the link (``table.up[index]`` set); :class:`LinkRefused` if refused."""
    loop = asyncio.get_running_loop()
    pid_space = min(65_535, max(2, 2 * window))
    transport, link = await asyncio.wait_for(
        loop.create_connection(lambda: PublisherLink(table, index, client_id, pid_space), host, port), timeout_s
    )
    link.transport = transport  # uvloop may report connection_made only after this returns
    transport.write(
        encode_connect(
            client_id,
            keepalive_s=keepalive_s,
            clean_start=True,
            session_expiry_s=0,
            receive_maximum=65_535,
            username=username,
            password=password,
            will=will,
        )
    )
    try:
        body = await asyncio.wait_for(link.connack, timeout_s)
    except BaseException:
        link.transport.close()
        raise
    code = body[1] if len(body) > 1 else 0x80
    if code >= 0x80:
        link.transport.close()
        raise LinkRefused(client_id, code)
    broker_max = _receive_maximum(body)
    table.window[index] = min(window, pid_space // 2, broker_max or 65_535)
    table.up[index] = True
    return link
