"""Publish large streams at QoS 1 quickly, for load generation and benchmarks.

paho-mqtt publishes a few tens of thousands of messages a second from Python; queueing
half a million messages in a broker should not take longer than the measurement it
prepares. This publisher writes PUBLISH frames in bulk on one MQTT 5 connection,
keeps at most ``window`` unacknowledged, and returns once the broker has PUBACKed all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from gateway.ingest.mqtt_wire import (
    CONNACK,
    PUBACK,
    ControlPacket,
    InboundPublishes,
    connack_result,
    encode_connect,
    encode_publish,
    parse_stream,
)


class _PublisherProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.connack: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.acked = 0
        self.progress = asyncio.Event()
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        controls: list[ControlPacket] = []
        used = parse_stream(self.buf, InboundPublishes([], [], [], []), controls)
        del self.buf[:used]
        for packet in controls:
            if packet.kind == CONNACK and not self.connack.done():
                self.connack.set_result(packet.body)
            elif packet.kind == PUBACK:
                self.acked += 1
        self.progress.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        self.progress.set()


async def publish_all(
    host: str,
    port: int,
    messages: Iterable[tuple[str, bytes]],
    *,
    client_id: str = "bulk-publisher",
    qos: int = 1,
    window: int = 5_000,
    chunk: int = 500,
    username: str | None = None,
    password: str | None = None,
) -> int:
    """Publish every message; return how many the broker acknowledged (or sent, QoS 0)."""
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(_PublisherProtocol, host, port)
    assert proto.transport is not None
    proto.transport.write(
        encode_connect(
            client_id,
            keepalive_s=60,
            clean_start=True,
            session_expiry_s=0,
            receive_maximum=65_535,
            username=username,
            password=password,
        )
    )
    _, code = connack_result(await asyncio.wait_for(proto.connack, 10))
    if code >= 0x80:
        raise ConnectionError(f"broker refused the publisher: 0x{code:02x}")
    sent = 0
    pid = 0
    frames: list[bytes] = []
    for topic, payload in messages:
        if qos:
            pid = pid % 65_535 + 1
        frames.append(encode_publish(topic, payload, qos=qos, packet_id=pid))
        if len(frames) >= chunk:
            sent += len(frames)
            proto.transport.write(b"".join(frames))
            frames.clear()
            while qos and sent - proto.acked > window:
                if proto.lost.done():
                    raise ConnectionError("broker closed the publisher's connection")
                proto.progress.clear()
                await proto.progress.wait()
            await asyncio.sleep(0)
    if frames:
        sent += len(frames)
        proto.transport.write(b"".join(frames))
    while qos and proto.acked < sent and not proto.lost.done():
        proto.progress.clear()
        await asyncio.wait_for(proto.progress.wait(), 30)
    proto.transport.write(b"\xe0\x00")
    proto.transport.close()
    return proto.acked if qos else sent
