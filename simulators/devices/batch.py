"""Many devices at once, as arrays: the payload factory of fleet mode.

The same models as the single-device simulators, stepped for a whole batch with numpy:
wristbands replay day plans written by :func:`~simulators.devices.paths.plan_day` (a
small library of them, each device with its own home, time shift and physiology), vitals,
GPS noise, glucose and blood pressure come from :mod:`~simulators.devices.physiology`,
and every payload is one of the contract's wire structs. Values stay in everyday ranges
(no emergencies): a load test should not page anyone.

``messages(devices, now_ms)`` returns one payload per device index, and its channel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray

from simulators.devices import physiology as phys
from simulators.devices.paths import M_PER_DEG_LAT, OFF_WRIST, neighbourhood, plan_day, sample_plan
from simulators.devices.wire import (
    BloodPressureReadingOut,
    DeviceStatusOut,
    GlucoseReadingOut,
    WristbandTelemetryOut,
    encode,
)

TYPES: tuple[str, ...] = ("wristband", "pager", "glucose", "bp")
CHANNELS: tuple[str, ...] = ("telemetry", "event", "status")
TELEMETRY, EVENT, STATUS = 0, 1, 2
WRISTBAND, PAGER, GLUCOSE, BP = 0, 1, 2, 3
FIRMWARE = ("2.4.1", "1.3.0", "3.1.0", "1.0.9")
# every n-th message of a device is its status (a pager sends nothing else unless pressed)
STATUS_EVERY = (60, 1, 20, 20)
I64 = NDArray[np.int64]


class FleetModel:
    """State of ``len(device_ids)`` devices of mixed types, stepped a batch at a time."""

    def __init__(
        self,
        device_ids: Sequence[str],
        device_types: Sequence[str],
        *,
        seed: int = 1,
        centre: tuple[float, float] = (31.2304, 121.4737),
        spread_m: float = 3000.0,
        tz: str = "Asia/Shanghai",
        plans: int = 16,
        plan_step_s: float = 5.0,
    ) -> None:
        n = len(device_ids)
        if len(device_types) != n:
            raise ValueError("one type per device")
        self.device_ids = list(device_ids)
        self.type_code = np.array([TYPES.index(t) for t in device_types], np.int8)
        self.tz = ZoneInfo(tz)
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.home_lat = centre[0] + rng.uniform(-spread_m, spread_m, n) / M_PER_DEG_LAT
        self.m_per_deg_lon = 111_320.0 * math.cos(math.radians(centre[0]))
        self.home_lon = centre[1] + rng.uniform(-spread_m, spread_m, n) / self.m_per_deg_lon
        days = []
        for k in range(plans):
            plan_rng = np.random.default_rng([seed, k])
            days.append(sample_plan(plan_day(0, plan_rng, neighbourhood(plan_rng)), 0, plan_step_s))
        self.plan_step_s = plan_step_s
        self.east = np.stack([d.east_m for d in days])
        self.north = np.stack([d.north_m for d in days])
        self.indoor = np.stack([d.indoor for d in days])
        self.activity = np.stack([d.activity for d in days])
        self.walking_s = np.stack([d.walking_s for d in days])
        self.sitting_s = np.stack([d.sitting_s for d in days])
        self.plan = rng.integers(0, plans, n)
        self.shift_s = rng.uniform(-2700.0, 2700.0, n)  # nobody keeps exactly the same hours
        self.rest_bpm = rng.uniform(60.0, 78.0, n)
        self.spo2_pct = rng.uniform(95.5, 98.0, n)
        self.cadence = rng.uniform(90.0, 112.0, n)
        self.pottering = rng.uniform(150.0, 400.0, n)
        self.battery = rng.uniform(45.0, 100.0, n)
        self.drain = rng.uniform(0.8, 1.6, n)
        self.rssi = np.rint(rng.uniform(-95.0, -60.0, n))
        self.control_mmol = rng.uniform(5.2, 7.5, n)
        self.systolic = rng.uniform(120.0, 145.0, n)
        self.diastolic = rng.uniform(72.0, 88.0, n)
        self.count = np.zeros(n, np.int64)
        self.last_ts = np.zeros(n, np.int64)
        self.seen_ms = np.zeros(n, np.int64)

    def __len__(self) -> int:
        return int(self.type_code.shape[0])

    def messages(self, idx: I64, now_ms: int) -> tuple[list[bytes], NDArray[np.int8]]:
        """The next message of each device in ``idx`` (indices may not repeat), at ``now_ms``."""
        ts = np.maximum(now_ms, self.last_ts[idx] + 1)  # one reading per ms and device at most
        self.last_ts[idx] = ts
        types = self.type_code[idx]
        every = np.asarray(STATUS_EVERY, np.int64)[types]
        channel = np.where(self.count[idx] % every == every - 1, STATUS, TELEMETRY).astype(np.int8)
        self.count[idx] += 1
        offset_s = datetime.fromtimestamp(now_ms / 1000, self.tz).utcoffset()
        local_s = ts / 1000 + (offset_s.total_seconds() if offset_s is not None else 0.0)
        payloads: list[bytes] = [b""] * idx.shape[0]
        for code, build in ((WRISTBAND, self._wristband), (GLUCOSE, self._glucose), (BP, self._bp)):
            sel = np.flatnonzero((types == code) & (channel == TELEMETRY))
            if sel.shape[0]:
                for j, payload in zip(sel.tolist(), build(idx[sel], ts[sel], local_s[sel]), strict=True):
                    payloads[j] = payload
        sel = np.flatnonzero(channel == STATUS)
        if sel.shape[0]:
            for j, payload in zip(sel.tolist(), self._status(idx[sel], ts[sel]), strict=True):
                payloads[j] = payload
        self.seen_ms[idx] = ts
        return payloads, channel

    def _wristband(self, idx: I64, ts: I64, local_s: NDArray[np.float64]) -> list[bytes]:
        tod = np.mod(local_s + self.shift_s[idx], 86_400.0)
        j = np.minimum((tod / self.plan_step_s).astype(np.int64), self.east.shape[1] - 1)
        k = self.plan[idx]
        act = self.activity[k, j]
        worn = act != OFF_WRIST
        de, dn, acc = phys.gps_fix(self.indoor[k, j] | ~worn, self.rng)
        lat = np.round(self.home_lat[idx] + (self.north[k, j] + dn) / M_PER_DEG_LAT, 6)
        lon = np.round(self.home_lon[idx] + (self.east[k, j] + de) / self.m_per_deg_lon, 6)
        hr = phys.heart_rate(act, self.rest_bpm[idx], self.rng)
        spo2 = phys.spo2(act, self.spo2_pct[idx], self.rng)
        steps = phys.step_count(
            self.walking_s[k, j].astype(np.float64),
            self.cadence[idx],
            self.pottering[idx],
            self.sitting_s[k, j] / 3600.0,
        )
        self._drain(idx, ts, ~worn)
        battery = np.round(self.battery[idx], 1)
        out = []
        for t, la, lo, a, h, s, st, b, w in zip(
            ts.tolist(),
            lat.tolist(),
            lon.tolist(),
            acc.tolist(),
            hr.tolist(),
            spo2.tolist(),
            steps.tolist(),
            battery.tolist(),
            worn.tolist(),
            strict=True,
        ):
            fix = a == a  # NaN: no fix
            out.append(
                encode(
                    WristbandTelemetryOut(
                        ts=t,
                        lat=la if fix else None,
                        lon=lo if fix else None,
                        gps_acc_m=a if fix else None,
                        hr=h if w else None,
                        spo2=s if w else None,
                        steps=st,
                        battery=b,
                        worn=w,
                    )
                )
            )
        return out

    def _drain(self, idx: I64, ts: I64, charging: NDArray[np.bool_]) -> None:
        seen = self.seen_ms[idx]
        dt = np.where(seen > 0, (ts - seen) / 1000.0, 0.0)
        level = phys.battery_step(self.battery[idx], dt, charging, self.drain[idx])
        self.battery[idx] = np.maximum(level, 25.0)  # fleets run for hours, not weeks: keep off the alarm

    def _glucose(self, idx: I64, ts: I64, local_s: NDArray[np.float64]) -> list[bytes]:
        hour = np.mod(local_s, 86_400.0) / 3600.0
        context = np.select(
            [
                (hour >= 5) & (hour < 8),
                (hour >= 8) & (hour < 10.5),
                (hour >= 10.5) & (hour < 12),
                (hour >= 12) & (hour < 14),
                (hour >= 16.5) & (hour < 18),
                (hour >= 18) & (hour < 20.5),
            ],
            [phys.FASTING, phys.AFTER_MEAL, phys.BEFORE_MEAL, phys.AFTER_MEAL, phys.BEFORE_MEAL, phys.AFTER_MEAL],
            default=phys.RANDOM,
        ).astype(np.int8)
        value = phys.glucose_mmol(context, np.zeros(idx.shape[0], np.int8), self.control_mmol[idx], self.rng)
        names = phys.CONTEXTS
        return [
            encode(GlucoseReadingOut(ts=t, glucose=v, unit="mmol/L", context=names[c]))  # type: ignore[arg-type]
            for t, v, c in zip(ts.tolist(), value.tolist(), context.tolist(), strict=True)
        ]

    def _bp(self, idx: I64, ts: I64, local_s: NDArray[np.float64]) -> list[bytes]:
        hour = np.mod(local_s, 86_400.0) / 3600.0
        sys_, dia, pulse, irregular = phys.blood_pressure(
            hour, np.zeros(idx.shape[0], bool), self.systolic[idx], self.diastolic[idx], self.rest_bpm[idx], self.rng
        )
        return [
            encode(BloodPressureReadingOut(ts=t, systolic=s, diastolic=d, pulse=p, irregular=i))
            for t, s, d, p, i in zip(
                ts.tolist(), sys_.tolist(), dia.tolist(), pulse.tolist(), irregular.tolist(), strict=True
            )
        ]

    def _status(self, idx: I64, ts: I64) -> list[bytes]:
        types = self.type_code[idx].tolist()
        battery = np.round(self.battery[idx], 1).tolist()
        return [
            encode(DeviceStatusOut(ts=t, battery=b, rssi_dbm=r, firmware=FIRMWARE[c], online=True))
            for t, b, r, c in zip(ts.tolist(), battery, self.rssi[idx].tolist(), types, strict=True)
        ]
