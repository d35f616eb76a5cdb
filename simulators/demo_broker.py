"""A small MQTT 5 broker for the demo, for machines where Mosquitto cannot be installed.

Only what the demo needs: CONNECT, SUBSCRIBE (wildcards; ``$share/<group>/`` is taken
as a plain subscription), UNSUBSCRIBE, PUBLISH at QoS 0 and 1 both ways, PINGREQ,
DISCONNECT and will messages. No persistence and no redelivery: a subscriber that is
away misses what is published meanwhile. That is not good enough for the gateway's
promise ("nothing acknowledged is lost"), so the demo says so when it uses it; real
deployments and the tests use Mosquitto. Built on the gateway's own MQTT codec.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from dataclasses import dataclass, field

from gateway.ingest.mqtt_wire import encode_publish, encode_varint

log = logging.getLogger(__name__)

CONNECT, PUBLISH, PUBACK, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT = 1, 3, 4, 8, 10, 12, 14


class _Malformed(Exception):
    pass


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.i = data, 0

    def byte(self) -> int:
        if self.i >= len(self.data):
            raise _Malformed("short packet")
        self.i += 1
        return self.data[self.i - 1]

    def u16(self) -> int:
        return (self.byte() << 8) | self.byte()

    def varint(self) -> int:
        value, shift = 0, 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
            if shift > 21:
                raise _Malformed("bad varint")

    def raw(self, n: int) -> bytes:
        if self.i + n > len(self.data):
            raise _Malformed("short packet")
        self.i += n
        return self.data[self.i - n : self.i]

    def text(self) -> str:
        return self.raw(self.u16()).decode("utf-8", errors="replace")

    def skip_properties(self) -> None:
        self.raw(self.varint())

    def rest(self) -> bytes:
        return self.data[self.i :]


def matches(topic_filter: str, topic: str) -> bool:
    f, t = topic_filter.split("/"), topic.split("/")
    for i, part in enumerate(f):
        if part == "#":
            return True
        if i >= len(t) or (part != "+" and part != t[i]):
            return False
    return len(f) == len(t)


@dataclass(eq=False)
class _Client:
    writer: asyncio.StreamWriter
    client_id: str = ""
    filters: dict[str, int] = field(default_factory=dict)
    will: tuple[str, bytes, int] | None = None
    next_pid: int = 0

    def pid(self) -> int:
        self.next_pid = self.next_pid % 65_535 + 1
        return self.next_pid


class DemoBroker:
    def __init__(self) -> None:
        self.clients: set[_Client] = set()
        self.server: asyncio.Server | None = None
        self.port = 0
        self.published = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> DemoBroker:
        self.server = await asyncio.start_server(self._serve, host, port)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for client in list(self.clients):
                client.writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = _Client(writer)
        clean = False
        try:
            while True:
                first = (await reader.readexactly(1))[0]
                length, shift = 0, 0
                while True:
                    b = (await reader.readexactly(1))[0]
                    length |= (b & 0x7F) << shift
                    if not b & 0x80:
                        break
                    shift += 7
                body = await reader.readexactly(length)
                kind = first >> 4
                if kind == DISCONNECT:
                    clean = True
                    return
                self._handle(client, kind, first, _Reader(body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, _Malformed):
            pass
        finally:
            self.clients.discard(client)
            if client.will is not None and not clean:
                self._route(*client.will)
            writer.close()

    def _handle(self, client: _Client, kind: int, first: int, r: _Reader) -> None:
        w = client.writer
        if kind == CONNECT:
            r.text()  # "MQTT"
            if r.byte() != 5:
                w.write(bytes([0x20, 3, 0, 0x84, 0]))  # unsupported protocol version
                raise _Malformed("not MQTT 5")
            flags = r.byte()
            r.u16()  # keepalive
            r.skip_properties()
            client.client_id = r.text()
            if flags & 0x04:  # will
                r.skip_properties()
                client.will = (r.text(), r.raw(r.u16()), min(1, (flags >> 3) & 3))
            if flags & 0x80:
                r.text()
            if flags & 0x40:
                r.raw(r.u16())
            self.clients.add(client)
            w.write(bytes([0x20, 3, 0, 0, 0]))  # session not present, success, no properties
        elif kind == SUBSCRIBE:
            pid = r.u16()
            r.skip_properties()
            codes = []
            while r.i < len(r.data):
                topic_filter, options = r.text(), r.byte()
                if topic_filter.startswith("$share/"):
                    topic_filter = topic_filter.split("/", 2)[2]
                qos = min(options & 3, 1)
                client.filters[topic_filter] = qos
                codes.append(qos)
            body = struct.pack("!H", pid) + b"\x00" + bytes(codes)
            w.write(bytes([0x90]) + encode_varint(len(body)) + body)
        elif kind == UNSUBSCRIBE:
            pid = r.u16()
            r.skip_properties()
            n = 0
            while r.i < len(r.data):
                client.filters.pop(r.text(), None)
                n += 1
            body = struct.pack("!H", pid) + b"\x00" + bytes(n)
            w.write(bytes([0xB0]) + encode_varint(len(body)) + body)
        elif kind == PUBLISH:
            qos = (first >> 1) & 3
            topic = r.text()
            pid = r.u16() if qos else 0
            r.skip_properties()
            self._route(topic, r.rest(), min(qos, 1))
            if qos:
                w.write(bytes([0x40, 2]) + struct.pack("!H", pid))
        elif kind == PINGREQ:
            w.write(b"\xd0\x00")
        # PUBACK from subscribers and anything else: nothing to do (no redelivery)

    def _route(self, topic: str, payload: bytes, qos: int) -> None:
        self.published += 1
        for other in list(self.clients):
            granted = max((q for f, q in other.filters.items() if matches(f, topic)), default=None)
            if granted is None:
                continue
            out = min(qos, granted)
            other.writer.write(encode_publish(topic, payload, qos=out, packet_id=other.pid() if out else 0))
