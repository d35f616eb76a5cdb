"""The gateway's MQTT 5 ingest connection: persistent session, QoS 1, acks on durability.

``MqttIngestClient.run`` keeps one connection up (reconnecting with back-off and
logging each state change once), subscribes with a persistent session, and hands
every parsed PUBLISH to ``sink`` together with the connection it arrived on. The
pipeline calls ``ack(connection, packet_ids)`` once those messages are durable; acks
for a connection that has since dropped are discarded, because packet ids are only
meaningful on their own connection (the broker redelivers those messages, flagged
DUP, on the next one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from gateway.ingest.mqtt_wire import (
    CONNACK,
    DISCONNECT_BYTES,
    DISCONNECT_END_SESSION_BYTES,
    PINGREQ_BYTES,
    PINGRESP,
    PUBACK,
    SUBACK,
    UNSUBACK,
    ControlPacket,
    InboundPublishes,
    Will,
    connack_result,
    encode_connect,
    encode_pubacks,
    encode_publish,
    encode_subscribe,
    encode_unsubscribe,
    parse_stream,
    suback_codes,
)

log = logging.getLogger(__name__)


class MqttConnectError(ConnectionError):
    """The broker refused the connection or the subscription; carries the reason code."""

    def __init__(self, message: str, reason_code: int | None = None) -> None:
        super().__init__(message)
        self.reason_code = reason_code


@dataclass(frozen=True, slots=True)
class MqttSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = "eldercare-gateway"
    username: str | None = None
    password: str | None = None
    # the three device-to-gateway channels; not "+/+/+", which would bring our own cmd back
    topic_filters: tuple[str, ...] = ("eldercare/v1/+/+/telemetry", "eldercare/v1/+/+/event", "eldercare/v1/+/+/status")
    share_group: str | None = None  # "$share/<group>/..." for several gateway instances
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 86_400
    receive_maximum: int = 65_535
    connect_timeout_s: float = 10.0
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 10.0
    tls_ca_file: str | None = None

    @property
    def subscription(self) -> list[str]:
        if self.share_group:
            return [f"$share/{self.share_group}/{f}" for f in self.topic_filters]
        return list(self.topic_filters)


Sink = Callable[[InboundPublishes, "IngestConnection"], None]


class IngestConnection(asyncio.Protocol):
    """One TCP connection to the broker; parses frames and forwards publishes."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._replies: dict[int, asyncio.Future[ControlPacket]] = {}
        self._puback_waiters: dict[int, asyncio.Future[None]] = {}
        self.last_heard = 0.0
        self.paused = False
        self.held = False  # the gateway is stopping: publishes are left unacknowledged, for the next session
        self.unacked = 0  # QoS 1 messages received and not yet acknowledged (a takeover waits for 0)

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        publishes = InboundPublishes([], [], [], [])
        controls: list[ControlPacket] = []
        try:
            used = parse_stream(buf, publishes, controls)
        except Exception as error:  # a broken stream cannot be resynchronised: drop it
            log.error("MQTT stream from broker is corrupt (%s); reconnecting", error)
            self.abort()
            return
        if used:
            del buf[:used]
        self.last_heard = asyncio.get_running_loop().time()
        for packet in controls:
            self._control(packet)
        if publishes.topics:
            ids = publishes.packet_ids
            self.unacked += len(ids) - ids.count(0)
            if not self.held:
                self._sink(publishes, self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        waiters: list[asyncio.Future[ControlPacket] | asyncio.Future[None]] = [
            *self._replies.values(),
            *self._puback_waiters.values(),
        ]
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(ConnectionError("connection to broker lost"))
        if not self.closed.done():
            self.closed.set_result(None)

    def _control(self, packet: ControlPacket) -> None:
        if packet.kind == PUBACK:
            pid = (packet.body[0] << 8) | packet.body[1]
            waiter = self._puback_waiters.pop(pid, None)
            if waiter and not waiter.done():
                waiter.set_result(None)
            return
        if packet.kind == PINGRESP:
            return
        waiter2 = self._replies.pop(packet.kind, None)
        if waiter2 is not None and not waiter2.done():
            waiter2.set_result(packet)

    # used by the client
    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def expect(self, kind: int) -> asyncio.Future[ControlPacket]:
        future: asyncio.Future[ControlPacket] = asyncio.get_running_loop().create_future()
        self._replies[kind] = future
        return future

    def expect_puback(self, packet_id: int) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._puback_waiters[packet_id] = future
        return future

    def ack(self, packet_ids: list[int]) -> None:
        ids = [pid for pid in packet_ids if pid]
        if ids:
            self.unacked -= len(ids)
            self.write(encode_pubacks(ids))

    def pause(self) -> None:
        if self.transport is not None and not self.paused:
            self.transport.pause_reading()
            self.paused = True

    def hold(self) -> None:
        """Pass no more publishes on; control packets (PUBACKs of our downlinks, pings) still flow."""
        self.held = True

    def resume(self) -> None:
        if self.transport is not None and self.paused:
            self.transport.resume_reading()
            self.paused = False

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class MqttIngestClient:
    """Keeps the ingest connection alive; exposes ack, publish and the connection state."""

    def __init__(self, settings: MqttSettings, sink: Sink) -> None:
        self.settings = settings
        self._sink = sink
        self.connection: IngestConnection | None = None
        self.connected = asyncio.Event()
        self._next_pid = 0
        self.connects = 0
        self._closed = False  # close() was called: do not reconnect

    async def run(self) -> None:
        """Connect, subscribe, keep alive; on loss reconnect with jittered back-off."""
        delay = self.settings.backoff_initial_s
        state = "starting"
        while True:
            try:
                conn = await self._connect()
            except (OSError, TimeoutError, MqttConnectError) as error:
                if state != "down":
                    log.warning("MQTT broker unreachable (%s); retrying with back-off", error)
                    state = "down"
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.settings.backoff_max_s)
                continue
            delay = self.settings.backoff_initial_s
            if state != "up":
                log.info(
                    "MQTT connected to %s:%d as %s", self.settings.host, self.settings.port, self.settings.client_id
                )
                state = "up"
            self.connection = conn
            self.connected.set()
            try:
                await self._keepalive(conn)
            finally:
                self.connected.clear()
                conn.abort()
            if self._closed:
                return
            log.warning("MQTT connection lost; reconnecting")
            state = "lost"

    async def _connect(
        self, *, subscribe: bool = True, clean_start: bool = False, session_expiry_s: int | None = None
    ) -> IngestConnection:
        s = self.settings
        loop = asyncio.get_running_loop()
        ssl_context = None
        if s.tls_ca_file:
            ssl_context = ssl.create_default_context(cafile=s.tls_ca_file)
        async with asyncio.timeout(s.connect_timeout_s):
            _, conn = await loop.create_connection(
                lambda: IngestConnection(self._sink), s.host, s.port, ssl=ssl_context
            )
        try:
            async with asyncio.timeout(s.connect_timeout_s):
                connack = conn.expect(CONNACK)
                conn.write(
                    encode_connect(
                        s.client_id,
                        keepalive_s=s.keepalive_s,
                        clean_start=clean_start,
                        session_expiry_s=s.session_expiry_s if session_expiry_s is None else session_expiry_s,
                        receive_maximum=s.receive_maximum,
                        username=s.username,
                        password=s.password,
                    )
                )
                session_present, code = connack_result((await connack).body)
            if code >= 0x80:
                raise MqttConnectError(f"broker refused connection, reason 0x{code:02x}", code)
            if not subscribe or not s.subscription:  # a publish-only connection (the alert worker)
                return conn
            suback = conn.expect(SUBACK)
            conn.write(encode_subscribe(self._pid(), s.subscription, qos=1))
            codes = suback_codes((await self._reply(conn, suback)).body)
            if len(codes) != len(s.subscription) or any(code >= 0x80 for code in codes):
                raise MqttConnectError(f"subscription to {s.subscription} refused: {codes}")
        except BaseException:
            conn.abort()
            raise
        log.debug("MQTT session present: %s", session_present)
        self.connects += 1
        return conn

    async def _reply(self, conn: IngestConnection, reply: asyncio.Future[ControlPacket]) -> ControlPacket:
        """A reply that comes after what the broker had queued for a resumed session.

        Those messages go first, and reading pauses while the pipeline is full, so the
        SUBACK may take long with a backlog: wait while messages flow or we hold them
        back; give up once the broker has been silent for the connect timeout.
        """
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    async with asyncio.timeout(1.0):
                        return await asyncio.shield(reply)
                except TimeoutError:
                    if not conn.paused and loop.time() - conn.last_heard > self.settings.connect_timeout_s:
                        raise
        finally:
            if not reply.done():
                reply.cancel()  # nobody waits for it any more (and its error would go unread)

    async def _keepalive(self, conn: IngestConnection) -> None:
        interval = max(1.0, self.settings.keepalive_s / 2)
        loop = asyncio.get_running_loop()
        while conn.is_open:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await asyncio.shield(conn.closed)
            if not conn.is_open:
                return
            if loop.time() - conn.last_heard > self.settings.keepalive_s * 1.5 and not conn.paused:
                log.warning("MQTT broker silent for %.0f s; dropping connection", loop.time() - conn.last_heard)
                return
            conn.write(PINGREQ_BYTES)

    async def take_over(self, *, subscribed: bool) -> IngestConnection:
        """Connect once as ``client_id`` (another, dead instance's) to end its session.

        ``subscribed``: resume the session, so what the broker queued for it comes to the
        sink, and leave its subscription; ``close(conn, end_session=True)`` then ends it
        once everything is acknowledged (a plain close keeps what is left for another try).
        Otherwise: start clean with no expiry, which drops the session as this closes.
        """
        if not subscribed:
            return await self._connect(subscribe=False, clean_start=True, session_expiry_s=0)
        conn = await self._connect(subscribe=False)
        await self.unsubscribe(conn)
        return conn

    async def unsubscribe(self, conn: IngestConnection | None = None) -> None:
        """Leave our subscription (a shared group stops sending here); queued messages still come."""
        conn = conn or self.connection
        if conn is None or not conn.is_open:
            return
        unsuback = conn.expect(UNSUBACK)
        conn.write(encode_unsubscribe(self._pid(), self.settings.subscription))
        codes = suback_codes((await self._reply(conn, unsuback)).body)
        if any(code >= 0x80 for code in codes):
            log.warning("MQTT unsubscribe from %s refused: %s", self.settings.subscription, codes)

    def stop_reading(self) -> None:
        """Take no more messages (a stop): what came is flushed and acked, the broker keeps the rest.

        Without this, messages kept arriving while the stop flushed the batcher and sat in it
        unacknowledged when the connection closed (redelivered to the next session, so not
        lost, but not flushed either: tests/test_clean_stop.py saw 1,539 received, 1,401 acked).
        """
        self._closed = True  # and no reconnecting
        if self.connection is not None:
            self.connection.hold()

    def _pid(self) -> int:
        self._next_pid = self._next_pid % 65_535 + 1
        return self._next_pid

    def ack(self, connection: object, packet_ids: list[int]) -> bool:
        """Acknowledge on the connection the messages came from; False if it is gone."""
        if isinstance(connection, IngestConnection) and connection.is_open:
            connection.ack(packet_ids)
            return True
        return False

    async def publish(self, topic: str, payload: bytes, qos: int = 1, timeout_s: float = 5.0) -> None:
        """Publish a downlink (e.g. a device ``cmd``); waits for the PUBACK at QoS 1."""
        async with asyncio.timeout(timeout_s):
            await self.connected.wait()
            conn = self.connection
            assert conn is not None
            pid = self._pid() if qos else 0
            waiter = conn.expect_puback(pid) if qos else None
            conn.write(encode_publish(topic, payload, qos=qos, packet_id=pid))
            if waiter is not None:
                await waiter

    async def close(self, conn: IngestConnection | None = None, *, end_session: bool = False) -> None:
        """Disconnect (by default the current connection); ``end_session`` drops the broker session."""
        if conn is None or conn is self.connection:
            self._closed = True
            conn = self.connection
        if conn is not None and conn.is_open:
            conn.write(DISCONNECT_END_SESSION_BYTES if end_session else DISCONNECT_BYTES)
            await asyncio.sleep(0)
            conn.abort()


__all__ = ["IngestConnection", "MqttConnectError", "MqttIngestClient", "MqttSettings", "Will"]
