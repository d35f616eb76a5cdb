"""What every simulated device shares: clock, messages, status, commands and its connection.

A device is a model first and a network client second. ``advance(now_ms)`` returns
the messages that are due up to ``now_ms`` of device time (periodic readings, status,
anything a scripted action queued) without any I/O, so tests and a fast-clock scenario
runner can drive it; ``step()`` advances to ``clock()`` and publishes what came out.
Scripted actions (``sos()``, ``fall()``, ``measure()``...) queue their messages and,
when the device is connected, publish them at once.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import msgspec
import numpy as np

from devices.contracts import DeviceStatus, Payload, topic_for
from simulators.devices.connection import DeviceConnection
from simulators.devices.wire import encode, make

log = logging.getLogger("simulators.devices")

Clock = Callable[[], int]
P = TypeVar("P", bound=Payload)


def wall_clock_ms() -> int:
    """Milliseconds since the epoch, the default device clock."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message a device sends: its channel, the contract record, and the bytes."""

    topic: str
    channel: str
    record: Payload
    payload: bytes

    @property
    def ts_ms(self) -> int:
        ts = self.record.ts
        return ts if isinstance(ts, int) else 0


class DeviceCommand(msgspec.Struct, frozen=True, kw_only=True):
    """A downlink on ``cmd``: ``help_coming`` (someone is on the way) or ``confirm`` (are you OK?)."""

    cmd: str
    alert: str | None = None
    by: str | None = None
    timeout_s: float | None = None
    vibrate: str | None = None


@dataclass(frozen=True, slots=True)
class ReceivedCommand:
    """A command as the device got it (``command`` is None if it could not be read)."""

    at_ms: int
    command: DeviceCommand | None
    raw: bytes


_COMMAND = msgspec.json.Decoder(DeviceCommand)


class SimulatedDevice:
    """Base of the four device simulators (see the package docstring for the public API)."""

    device_type: ClassVar[str] = ""
    firmware: ClassVar[str] = "1.0.0"
    receipt: ClassVar[type[Payload] | None] = None  # event contract with a ``received`` kind

    def __init__(
        self,
        device_id: str,
        *,
        clock: Clock | None = None,
        seed: int | None = None,
        battery: float = 90.0,
        status_every_s: float = 3600.0,
    ) -> None:
        self.device_id = device_id
        self.clock: Clock = clock or wall_clock_ms
        self.rng = np.random.default_rng(zlib.crc32(device_id.encode()) if seed is None else seed)
        self.battery = float(battery)
        self.status_every_ms = round(status_every_s * 1000)
        self.connection: DeviceConnection | None = None
        self.commands: list[ReceivedCommand] = []
        self.sent: deque[Outgoing] = deque(maxlen=100_000)  # everything advance() released, in order
        self.rssi_dbm = float(self.rng.uniform(-95.0, -60.0))
        self._lock = threading.RLock()
        self._due: list[tuple[int, int, Outgoing]] = []
        self._seq = itertools.count()
        self._last_ts: dict[str, int] = {}
        self._next_status_ms: int | None = None
        self.on_command: Callable[[ReceivedCommand], None] | None = None  # hook for scenario runners

    # -- time and messages ---------------------------------------------------------------------

    def now_ms(self) -> int:
        return self.clock()

    def _stamp(self, key: str, ts_ms: int) -> int:
        """Device times are unique per table: a second reading in the same ms moves on by one."""
        last = self._last_ts.get(key)
        if last is not None and ts_ms <= last:
            ts_ms = last + 1
        self._last_ts[key] = ts_ms
        return ts_ms

    def message(
        self, channel: str, contract: type[P], *, ts: int | None, stamp_key: str | None = None, **fields: Any
    ) -> Outgoing:
        """Build (not send) a message on ``channel`` under ``contract``."""
        with self._lock:
            if ts is not None:
                ts = self._stamp(stamp_key or channel, ts)
        record = make(contract, ts=ts, **fields)
        return Outgoing(topic_for(self.device_type, self.device_id, channel), channel, record, encode(record))

    def queue(self, message: Outgoing, release_ms: int | None = None) -> Outgoing:
        """Send ``message`` with the next ``advance`` past ``release_ms`` (default: its own time)."""
        with self._lock:
            at = message.ts_ms if release_ms is None else release_ms
            heapq.heappush(self._due, (at, next(self._seq), message))
        return message

    def act(self, message: Outgoing, release_ms: int | None = None) -> Outgoing:
        """Queue a scripted action's message and publish it now if connected."""
        self.queue(message, min(message.ts_ms, self.clock()) if release_ms is None else release_ms)
        if self.connection is not None:
            self.step()
        return message

    def advance(self, now_ms: int) -> list[Outgoing]:
        """Every message due up to ``now_ms`` (device time), in time order; no I/O."""
        with self._lock:
            for message in self.readings(now_ms):
                heapq.heappush(self._due, (message.ts_ms, next(self._seq), message))
            if self._next_status_ms is None:
                self._next_status_ms = now_ms + self.status_every_ms
            while self._next_status_ms <= now_ms:
                heapq.heappush(
                    self._due, (self._next_status_ms, next(self._seq), self.status_message(self._next_status_ms))
                )
                self._next_status_ms += self.status_every_ms
            out: list[Outgoing] = []
            while self._due and self._due[0][0] <= now_ms:
                out.append(heapq.heappop(self._due)[2])
            self.sent.extend(out)
            return out

    def readings(self, now_ms: int) -> list[Outgoing]:
        """Periodic messages due up to ``now_ms``; each device type writes its own."""
        return []

    def status_message(self, ts_ms: int | None = None, online: bool = True) -> Outgoing:
        return self.message(
            "status",
            DeviceStatus,
            ts=self.now_ms() if ts_ms is None else ts_ms,
            battery=round(self.battery, 1),
            rssi_dbm=round(self.rssi_dbm),
            firmware=self.firmware,
            online=online,
        )

    # -- network -------------------------------------------------------------------------------

    def connect(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        password: str | None = None,
        wait_s: float | None = 10.0,
        **options: Any,
    ) -> DeviceConnection:
        """Open the device's own connection (username = device id); wait for it unless ``wait_s`` is None.

        Raises :class:`~simulators.devices.connection.DeviceRefused` if the broker refuses it
        (the device keeps retrying with back-off until ``close``).
        """
        self.connection = DeviceConnection(
            self.device_type,
            self.device_id,
            host=host,
            port=port,
            password=password,
            on_command=self._command,
            on_online=self._online,
            **options,
        ).start()
        if wait_s is not None:
            self.connection.wait_connected(wait_s)
        return self.connection

    def step(self) -> list[Outgoing]:
        """Advance to ``clock()`` and publish what is due (kept for later while offline)."""
        out = self.advance(self.clock())
        if self.connection is not None:
            for message in out:
                self.connection.publish(message.channel, message.payload)
        return out

    def drop(self) -> None:
        """Lose the connection without a goodbye: the broker publishes the will (offline)."""
        if self.connection is not None:
            self.connection.drop()

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()

    def _online(self) -> None:
        """Just (re)connected: say so on ``status``, as firmware does after boot or a reconnect."""
        if self.connection is not None:
            with self._lock:
                message = self.status_message()
                self.sent.append(message)
            self.connection.publish("status", message.payload)

    # -- commands ------------------------------------------------------------------------------

    def _command(self, raw: bytes) -> None:
        now = self.now_ms()
        try:
            command: DeviceCommand | None = _COMMAND.decode(raw)
        except msgspec.DecodeError as error:
            log.warning("%s: unreadable command %r: %s", self.device_id, raw[:200], error)
            command = None
        received = ReceivedCommand(now, command, raw)
        with self._lock:
            self.commands.append(received)
        if command is not None:
            self.show(command, now)
        if self.on_command is not None:
            self.on_command(received)

    def show(self, command: DeviceCommand, now_ms: int) -> None:
        """Show the command to the elder, log it, and confirm with a ``received`` event."""
        if command.cmd == "help_coming":
            log.info(
                "%s: help is coming (%s%s)",
                self.device_id,
                command.alert or "no alert",
                f", by {command.by}" if command.by else "",
            )
        elif command.cmd == "confirm":
            log.info(
                '%s: asks the elder "are you OK?" (%s, %s s)',
                self.device_id,
                command.alert or "no alert",
                command.timeout_s,
            )
        else:
            log.info("%s: command %s (%s)", self.device_id, command.cmd, command.alert or "no alert")
        if self.receipt is None:
            return  # meters have no way to confirm (their contract has no ``received`` event)
        alert = (command.alert or "")[:32] or None
        with self._lock:
            message = self.message("event", self.receipt, ts=now_ms, event="received", alert=alert)
            self.sent.append(message)
        if self.connection is not None:
            self.connection.publish("event", message.payload)
