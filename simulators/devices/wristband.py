"""Simulated wristband: where the elder walks, vitals, steps, battery, raw acceleration, falls.

Every ``interval_s`` the band reports GPS (noisy outdoors, coarse or none indoors), heart
rate and SpO2 (lower asleep, higher walking), steps since local midnight, battery and
whether it is worn. The day follows :func:`~simulators.devices.paths.plan_day` (asleep,
out to the park and the market and back along the streets, the band off to charge in
the evening); scripted actions bend it: ``walk_to``, ``wander`` (dementia: out of the
gate and away), ``bring_home``, ``fall`` (with or without getting up), ``take_off``,
``sos`` and ``cancel``.

Raw acceleration (``accel``): ``"impacts"`` (default) uploads a 50 Hz window around a fall
(5 s before the impact to 5 s after, sent once the band has the 5 s after) and the
moment the elder gets up; ``"stream"`` sends every ``accel_window_s`` seconds of the
wearer's activity without a gap, falls included; ``"off"`` sends none.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import numpy as np

from devices.contracts import WristbandEvent, WristbandTelemetry
from simulators.devices import accel as acc
from simulators.devices import physiology as phys
from simulators.devices.base import Clock, Outgoing, SimulatedDevice
from simulators.devices.paths import (
    HOUR_MS,
    LYING,
    OFF_WRIST,
    SITTING,
    SLEEPING,
    WALKING,
    Habits,
    Itinerary,
    Segment,
    neighbourhood,
    plan_day,
    route_home,
    street_route,
    to_latlon,
    walk,
    wander,
)

AccelMode = Literal["off", "impacts", "stream"]
SHANGHAI = "Asia/Shanghai"
_ACTIVITY_SIGNAL = {WALKING: "walking", SLEEPING: "sleeping", SITTING: "sitting", LYING: "sleeping"}


class Wristband(SimulatedDevice):
    device_type = "wristband"
    firmware = "2.4.1"
    receipt = WristbandEvent

    def __init__(
        self,
        device_id: str,
        *,
        home: tuple[float, float] = (31.2304, 121.4737),
        clock: Clock | None = None,
        seed: int | None = None,
        interval_s: float = 60.0,
        tz: str = SHANGHAI,
        habits: Habits | None = None,
        accel: AccelMode = "impacts",
        accel_window_s: float = 2.0,
        rest_bpm: float | None = None,
        spo2_pct: float | None = None,
        battery: float = 85.0,
        drain_pct_per_h: float = 1.2,
        band_detects_falls: bool = True,
        status_every_s: float = 3600.0,
    ) -> None:
        super().__init__(device_id, clock=clock, seed=seed, battery=battery, status_every_s=status_every_s)
        self.home = home
        self.tz = ZoneInfo(tz)
        self.interval_ms = round(interval_s * 1000)
        self.accel_mode: AccelMode = accel
        self.accel_window_ms = round(accel_window_s * 1000)
        self.drain_pct_per_h = drain_pct_per_h
        self.band_detects_falls = band_detects_falls
        rng = self.rng
        self.places = neighbourhood(rng)
        self.habits = habits or Habits()
        self.rest_bpm = float(rest_bpm if rest_bpm is not None else rng.uniform(62.0, 78.0))
        self.spo2_pct = float(spo2_pct if spo2_pct is not None else rng.uniform(95.5, 98.0))
        self.cadence_spm = float(rng.uniform(90.0, 112.0))
        self.pottering_steps_per_h = float(rng.uniform(150.0, 400.0))
        self.vitals_override: dict[str, float] = {}  # e.g. {"hr": 38} forces what the sensor reads
        self.removed = False
        start = self.clock()
        self.itinerary = Itinerary(plan_day(self.midnight(start), rng, self.places, self.habits))
        self._next_reading_ms = start
        self._battery_ms = start
        self._was_worn = True
        self._accel_next_ms = start
        self._accel_script: list[tuple[int, acc.Signal]] = []  # (start ms, samples) spliced into the stream

    # -- time of day -----------------------------------------------------------------------------

    def midnight(self, t_ms: int) -> int:
        """Local midnight starting the day of ``t_ms``."""
        local = datetime.fromtimestamp(t_ms / 1000, self.tz)
        return int(local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)

    def _next_midnight(self, t_ms: int) -> int:
        local = datetime.fromtimestamp(self.midnight(t_ms) / 1000, self.tz) + timedelta(days=1)
        return int(local.replace(hour=0).timestamp() * 1000)

    def _extend(self, t_ms: int) -> None:
        """Plan the following days as time reaches them; forget yesterday's segments."""
        while self.itinerary.end_ms <= t_ms:
            end = self.itinerary.end_ms
            day = self.midnight(end)
            if day < end:
                nxt = self._next_midnight(end)
                self.itinerary.replace_from(end, [self._stay("home", end, nxt)])
                day = nxt
            self.itinerary.replace_from(day, plan_day(day, self.rng, self.places, self.habits))
        self.itinerary.drop_before(self.midnight(t_ms) - HOUR_MS)

    def _stay(
        self,
        kind: Literal["home", "sleep", "lying", "visit"],
        start: int,
        end: int,
        at: tuple[float, float] = (0.0, 0.0),
        indoor: bool = True,
    ) -> Segment:
        return Segment(kind, start, end, np.array([at], dtype=np.float64), indoor, "home" if at == (0, 0) else "")

    def _rest_of_day(self, t_ms: int) -> list[Segment]:
        """At home until bedtime, then asleep until midnight."""
        nxt = self._next_midnight(t_ms)
        bed = max(t_ms, self.midnight(t_ms) + round(22 * HOUR_MS))
        return [self._stay("home", t_ms, min(bed, nxt)), self._stay("sleep", min(bed, nxt), nxt)]

    # -- where and what now ----------------------------------------------------------------------

    def _where(self, t_ms: int) -> tuple[Segment, tuple[float, float]]:
        self._extend(t_ms)
        seg = self.itinerary.at(t_ms)
        return seg, seg.position(t_ms)

    def position(self) -> tuple[float, float]:
        """Where the elder really is now (lat, lon), without GPS error."""
        _, (e, n) = self._where(self.clock())
        lat, lon = to_latlon(*self.home, e, n)
        return float(lat), float(lon)

    def activity_now(self) -> int:
        seg, _ = self._where(self.clock())
        return OFF_WRIST if self.removed else seg.activity

    # -- periodic readings -----------------------------------------------------------------------

    def readings(self, now_ms: int) -> list[Outgoing]:
        out: list[Outgoing] = []
        behind = (now_ms - self._next_reading_ms) // self.interval_ms
        if behind > 1000:  # the clock jumped ahead: send the last 1,000 readings, not days of them
            self._next_reading_ms += (behind - 1000) * self.interval_ms
        while self._next_reading_ms <= now_ms:
            out += self._reading(self._next_reading_ms)
            self._next_reading_ms += self.interval_ms
        if self.accel_mode == "stream":
            if now_ms - self._accel_next_ms > 10 * 60_000:
                self._accel_next_ms = now_ms - self.accel_window_ms
            while self._accel_next_ms + self.accel_window_ms <= now_ms:
                out.append(self._accel_message(self._accel_next_ms, self._stream_window(self._accel_next_ms)))
                self._accel_next_ms += self.accel_window_ms
        return out

    def _reading(self, t: int) -> list[Outgoing]:
        out: list[Outgoing] = []
        seg, (e, n) = self._where(t)
        activity = OFF_WRIST if self.removed else seg.activity
        worn = activity != OFF_WRIST
        if self._was_worn and not worn:
            taken_off = seg.start_ms if seg.kind == "charging" and seg.start_ms > t - self.interval_ms else t
            out.append(self.message("event", WristbandEvent, ts=taken_off, event="removed"))
        self._was_worn = worn
        charging = seg.kind == "charging" and not self.removed
        drain = self.drain_pct_per_h * (1.0 if worn else 0.4) + (0.0 if seg.indoor else 0.8)
        self.battery = float(
            phys.battery_step(
                np.array([self.battery]),
                np.array([(t - self._battery_ms) / 1000]),
                np.array([charging]),
                np.array([drain]),
            )[0]
        )
        self._battery_ms = t
        indoor = np.array([seg.indoor or not worn])
        de, dn, accuracy = phys.gps_fix(indoor, self.rng)
        act = np.array([activity], np.int8)
        hr = float(phys.heart_rate(act, np.array([self.rest_bpm]), self.rng)[0])
        spo2 = float(phys.spo2(act, np.array([self.spo2_pct]), self.rng)[0])
        hr = self.vitals_override.get("hr", hr) if worn else hr
        spo2 = self.vitals_override.get("spo2", spo2) if worn else spo2
        fields: dict[str, Any] = {"steps": self.steps(t), "battery": round(self.battery, 1), "worn": worn}
        if not np.isnan(accuracy[0]):
            lat, lon = to_latlon(*self.home, e + de[0], n + dn[0])
            fields.update(lat=round(float(lat), 6), lon=round(float(lon), 6), gps_acc_m=float(accuracy[0]))
        if worn:
            fields.update(hr=hr, spo2=spo2)
        out.append(self.message("telemetry", WristbandTelemetry, ts=t, **fields))
        return out

    def steps(self, t_ms: int) -> int:
        """Steps since local midnight: walking at the elder's cadence, pottering about at home."""
        day = self.midnight(t_ms)
        walking_s = self.itinerary.seconds(WALKING, day, t_ms)
        home_s = self.itinerary.seconds(SITTING, day, t_ms)
        return int(
            phys.step_count(
                np.array([walking_s]),
                np.array([self.cadence_spm]),
                np.array([self.pottering_steps_per_h]),
                np.array([home_s / 3600]),
            )[0]
        )

    # -- raw acceleration ------------------------------------------------------------------------

    def _accel_message(self, start_ms: int, samples: acc.Signal) -> Outgoing:
        return self.message("telemetry", WristbandTelemetry, ts=start_ms, accel=acc.accel_window(samples))

    def _stream_window(self, start_ms: int) -> acc.Signal:
        n = self.accel_window_ms // acc.DT_MS
        seg, _ = self._where(start_ms)
        if self.removed or seg.activity == OFF_WRIST:
            samples = acc.still(n / acc.RATE_HZ, self.rng, np.array([0.0, 0.0, 1.0]), tremor_g=0.002)
        else:
            samples = acc.activity(_ACTIVITY_SIGNAL[seg.activity], n / acc.RATE_HZ, self.rng)
        end_ms = start_ms + n * acc.DT_MS
        keep: list[tuple[int, acc.Signal]] = []
        for s_ms, sig in self._accel_script:
            s_end = s_ms + sig.shape[0] * acc.DT_MS
            if s_end > end_ms:
                keep.append((s_ms, sig))
            lo, hi = max(s_ms, start_ms), min(s_end, end_ms)
            if lo < hi:
                a, b = (lo - start_ms) // acc.DT_MS, (hi - start_ms) // acc.DT_MS
                k = (lo - s_ms) // acc.DT_MS
                samples[a:b] = sig[k : k + b - a]
        self._accel_script = keep
        return samples

    # -- scripted actions ------------------------------------------------------------------------

    def sos(self) -> Outgoing:
        """The elder holds the SOS button."""
        return self.act(self.message("event", WristbandEvent, ts=self.clock(), event="sos"))

    def cancel(self) -> Outgoing:
        """The elder presses cancel (pressed by mistake, or "I am OK")."""
        return self.act(self.message("event", WristbandEvent, ts=self.clock(), event="cancel"))

    def take_off(self) -> Outgoing:
        """The band comes off the wrist: a ``removed`` event, then readings with ``worn: false``."""
        self.removed = True
        self._was_worn = False
        return self.act(self.message("event", WristbandEvent, ts=self.clock(), event="removed"))

    def put_on(self) -> None:
        self.removed = False

    def walk_to(self, place: str) -> None:
        """Go now from home to ``place`` (market, park, post_station, clinic), stay a while, walk back."""
        now = self.clock()
        target = self.places[place]
        _, here = self._where(now)
        speed = float(self.rng.uniform(*self.habits.speed_mps))
        there = walk(now, street_route(here, (target.east_m, target.north_m), self.rng), speed, place=place)
        stay_end = there.end_ms + round(self.rng.uniform(*target.dwell_s) * 1000)
        stay = self._stay("visit", there.end_ms, stay_end, (target.east_m, target.north_m), target.indoor)
        back = walk(stay_end, street_route((target.east_m, target.north_m), (0.0, 0.0), self.rng), speed)
        self.itinerary.replace_from(now, [there, stay, back, *self._rest_of_day(back.end_ms)])

    def wander(self) -> None:
        """Dementia: leave home now and keep walking away along the streets, for hours."""
        now = self.clock()
        _, here = self._where(now)
        trip = wander(now, here, self.rng)
        end = (float(trip.points[-1, 0]), float(trip.points[-1, 1]))
        lost = self._stay("visit", trip.end_ms, trip.end_ms + 12 * HOUR_MS, end, indoor=False)
        self.itinerary.replace_from(now, [trip, lost])

    def bring_home(self) -> None:
        """Someone walks the elder home from wherever they are."""
        now = self.clock()
        _, here = self._where(now)
        back = walk(now, route_home(here, (0.0, 0.0), self.rng), 0.8)
        self.itinerary.replace_from(now, [back, *self._rest_of_day(back.end_ms)])

    def fall(self, recover_after_s: float | None = None) -> Outgoing | None:
        """The elder falls now; gets up after ``recover_after_s`` or, with None, stays down.

        The band's own detector reports a ``fall`` event at once (``band_detects_falls``); the
        raw window follows once the 5 s after the impact are recorded. Returns the event, if any.
        """
        now = self.clock()
        seg, here = self._where(now)
        moving = (not self.removed) and seg.activity == WALKING
        down_ms = round(recover_after_s * 1000) if recover_after_s is not None else 12 * HOUR_MS
        signal = acc.fall(
            self.rng,
            before_s=5.0,
            after_s=5.0,
            walking_before=moving,
            recover_after_s=recover_after_s if self.accel_mode == "stream" else None,
        )
        start_ms = now - signal.impact_index * acc.DT_MS
        lying = self._stay("lying", now, now + down_ms, here, seg.indoor)
        after = self._up_and_home(now + down_ms, here) if recover_after_s is not None else []
        self.itinerary.replace_from(now, [lying, *after])
        if self.accel_mode == "stream":
            self._accel_script.append((start_ms, signal.samples))
        elif self.accel_mode == "impacts":
            self.queue(
                self._accel_message(start_ms, signal.samples), release_ms=start_ms + signal.samples.shape[0] * acc.DT_MS
            )
            if recover_after_s is not None:
                self._queue_getting_up(now + down_ms, signal.lying_pose)
        event = None
        if self.band_detects_falls:
            event = self.message("event", WristbandEvent, ts=now, event="fall")
            self.queue(event)
        if self.connection is not None:
            self.step()
        return event

    def get_up(self) -> None:
        """A fallen elder gets up now (e.g. helped by a responder) and goes home."""
        now = self.clock()
        seg, here = self._where(now)
        if seg.kind != "lying":
            return
        self.itinerary.replace_from(now, self._up_and_home(now, here))
        if self.accel_mode == "impacts":
            self._queue_getting_up(now, acc.LYING_POSES[0])
        elif self.accel_mode == "stream":
            self._accel_script.append((now, acc.getting_up(self.rng, acc.LYING_POSES[0])))
        if self.connection is not None:
            self.step()

    def _up_and_home(self, t_ms: int, here: tuple[float, float]) -> list[Segment]:
        if np.hypot(*here) < 1.0:
            return self._rest_of_day(t_ms)
        back = walk(t_ms + 10_000, route_home(here, (0.0, 0.0), self.rng), 0.6)
        return [self._stay("visit", t_ms, t_ms + 10_000, here, False), back, *self._rest_of_day(back.end_ms)]

    def _queue_getting_up(self, t_ms: int, pose: acc.Signal) -> None:
        samples = acc.getting_up(self.rng, pose)
        self.queue(self._accel_message(t_ms, samples), release_ms=t_ms + samples.shape[0] * acc.DT_MS)
