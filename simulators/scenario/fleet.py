"""The scenario's devices: wristbands reporting on their interval, presses, readings, walks.

Payloads follow ``devices.contracts`` exactly (the same contract firmware is checked
against) and go over MQTT at QoS 1 from one paho client, as a fleet of firmware would.
Every timestamp is scenario time. State per wristband: where the elder is (and where
they are walking to), steps since midnight, heart rate, SpO2, battery, worn, silent.
"""

from __future__ import annotations

import heapq
import json
import math
import uuid
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from devices.contracts import topic_for
from simulators.scenario.accel import as_payload, fall_window, walking_window
from simulators.scenario.clock import ScenarioClock
from simulators.scenario.model import PlaceIn, WalkIn
from simulators.scenario.plan import Device, Elder, World
from simulators.scenario.world import offset

STEPS_PER_M = 1.4


@dataclass(slots=True)
class _Walk:
    start_s: float
    origin: tuple[float, float]
    target: tuple[float, float]
    speed: float
    distance_m: float
    steps_at_start: int


@dataclass(slots=True)
class BandState:
    lat: float
    lon: float
    steps: int
    hr: float = 72.0
    spo2: float = 97.0
    battery: float = 85.0
    worn: bool = True
    gps_acc_m: float = 8.0
    walk: _Walk | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    dy = (b[0] - a[0]) * 110_574
    dx = (b[1] - a[1]) * 111_320 * math.cos(math.radians(a[0]))
    return math.hypot(dx, dy)


class ScenarioFleet:
    """Publishes for every device of the world; ``due(now_s)`` sends what the clock says is due."""

    def __init__(self, world: World, clock: ScenarioClock, port: int, host: str = "127.0.0.1") -> None:
        self.world = world
        self.clock = clock
        self.devices: dict[str, Device] = {d.id: d for e in world.elders.values() for d in e.devices}
        self.bands: dict[str, BandState] = {}
        for i, elder in enumerate(world.elders.values()):
            for d in elder.devices:
                if d.type == "wristband":
                    self.bands[d.id] = BandState(elder.lat, elder.lon, steps=1000 + (i * 37) % 900)
        self.silent: set[str] = set()
        self._queue: list[tuple[float, int, str]] = []  # (due scenario s, seq, device id)
        self._seq = 0
        for d in self.devices.values():
            if d.reports:
                self._schedule(0.0, d.id)
        self.sent = 0
        self._inflight: list[mqtt.MQTTMessageInfo] = []
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"scenario-fleet-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
        )
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect(host, port)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()  # first: the network thread then ends now, not at its next 1 s select
        self.client.loop_stop()

    def _schedule(self, at_s: float, device_id: str) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at_s, self._seq, device_id))

    def publish(self, device_id: str, channel: str, payload: dict[str, Any]) -> None:
        device = self.devices[device_id]
        self._inflight.append(
            self.client.publish(
                topic_for(device.type, device_id, channel), json.dumps(payload, ensure_ascii=False), qos=1
            )
        )
        self.sent += 1

    def unacknowledged(self) -> int:
        """Publishes the broker has not acknowledged yet (PUBACK)."""
        self._inflight = [info for info in self._inflight if not info.is_published()]
        return len(self._inflight)

    @property
    def reporting(self) -> int:
        """Devices that send periodic telemetry."""
        return sum(d.reports for d in self.devices.values())

    def next_report_s(self) -> float:
        return self._queue[0][0] if self._queue else math.inf

    def due(self, now_s: float) -> int:
        """Send the periodic telemetry due by ``now_s``; return how many messages."""
        before = self.sent
        while self._queue and self._queue[0][0] <= now_s:
            at_s, _, device_id = heapq.heappop(self._queue)
            device = self.devices[device_id]
            if device_id not in self.silent:
                self._report(device, now_s)
            self._schedule(at_s + device.interval_s, device_id)
        return self.sent - before

    def _report(self, device: Device, now_s: float) -> None:
        ts = self.clock.start_ms + int(now_s * 1000)
        if device.type == "wristband":
            band = self._move(device.id, now_s)
            payload: dict[str, Any] = {
                "ts": ts,
                "lat": round(band.lat, 7),
                "lon": round(band.lon, 7),
                "gps_acc_m": band.gps_acc_m,
                "hr": band.hr,
                "spo2": band.spo2,
                "steps": band.steps,
                "battery": band.battery,
                "worn": band.worn,
                **band.extra,
            }
        elif device.type == "glucose":
            payload = {"ts": ts, "glucose": 6.2, "context": "random"}
        elif device.type == "bp":
            payload = {"ts": ts, "systolic": 128, "diastolic": 82, "pulse": 72}
        else:
            return
        self.publish(device.id, "telemetry", payload)

    def _move(self, device_id: str, now_s: float) -> BandState:
        band = self.bands[device_id]
        walk = band.walk
        if walk is None:
            return band
        walked = min(walk.distance_m, (now_s - walk.start_s) * walk.speed)
        f = walked / walk.distance_m if walk.distance_m else 1.0
        band.lat = walk.origin[0] + (walk.target[0] - walk.origin[0]) * f
        band.lon = walk.origin[1] + (walk.target[1] - walk.origin[1]) * f
        band.steps = walk.steps_at_start + int(walked * STEPS_PER_M)
        if f >= 1.0:
            band.walk = None
        return band

    # -- timeline actions ----------------------------------------------------------------------

    def now_ts(self, now_s: float) -> int:
        return self.clock.start_ms + int(now_s * 1000)

    def event(self, device_id: str, kind: str, now_s: float) -> None:
        self.publish(device_id, "event", {"ts": self.now_ts(now_s), "event": kind})

    def reading(self, device_id: str, values: dict[str, Any], now_s: float) -> None:
        device = self.devices[device_id]
        if device.type == "wristband":
            band = self._move(device_id, now_s)
            for key, value in values.items():
                if key in ("hr", "spo2", "battery", "worn", "gps_acc_m", "steps"):
                    setattr(band, key, value)
            self._report(device, now_s)
            return
        self.publish(device_id, "telemetry", {"ts": self.now_ts(now_s), **values})

    def status(self, device_id: str, values: dict[str, Any], now_s: float) -> None:
        self.publish(device_id, "status", {"ts": self.now_ts(now_s), **values})

    def walk(self, elder: Elder, device_id: str, spec: WalkIn, now_s: float) -> None:
        band = self._move(device_id, now_s)
        origin = (band.lat, band.lon)
        to = spec.to
        if to == "home":
            target = (elder.lat, elder.lon)
        else:
            assert isinstance(to, PlaceIn)
            target = (
                (to.lat, to.lon)
                if to.lat is not None and to.lon is not None
                else offset(elder.lat, elder.lon, to.east_m or 0.0, to.north_m or 0.0)
            )
        band.walk = _Walk(now_s, origin, target, spec.speed, distance_m(origin, target), band.steps)

    def get_up(self, device_id: str, steps: int, now_s: float) -> None:
        band = self._move(device_id, now_s)
        band.steps += steps
        self._report(self.devices[device_id], now_s)

    def set_silent(self, device_id: str, silent: bool, now_s: float) -> None:
        if silent:
            self.silent.add(device_id)
        elif device_id in self.silent:
            self.silent.discard(device_id)
            self._report(self.devices[device_id], now_s)

    def accel(self, device_id: str, pattern: str, now_s: float) -> None:
        """The last 20 s of 50 Hz acceleration, sent now (a fall in it lies about 10 s back)."""
        samples = fall_window(seed=len(device_id))[0] if pattern == "fall" else walking_window()
        start_ms = self.now_ts(now_s) - int(len(samples) * 1000 / 50)
        self.publish(device_id, "telemetry", {"ts": start_ms, "accel": as_payload(samples)})

    def position(self, device_id: str, now_s: float) -> tuple[float, float]:
        band = self._move(device_id, now_s)
        return band.lat, band.lon
