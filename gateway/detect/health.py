"""Device health and elder inactivity: low battery, not worn, silent, no movement.

Silence and inactivity are about the *absence* of messages, so they are checked by
``tick(now)`` on a timer as well as when messages arrive. A device is silent when
nothing arrived for longer than ``silent_factor`` times its reporting interval
(strictly longer: a device exactly at the limit is not yet silent).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from gateway.detect.index import DetectSettings, DeviceIndex, grow, minute_of_day
from gateway.domain.detection import (
    DEVICE_SILENT,
    INACTIVITY,
    LOW_BATTERY,
    NOT_WORN,
    Detection,
    Severity,
)

MIN_SLOPE_SPAN_MS = 10 * 60_000
NEVER = np.iinfo(np.int64).min


class HealthDetector:
    def __init__(self, index: DeviceIndex, settings: DetectSettings) -> None:
        self.index = index
        self.s = settings
        self.capacity = -1  # below any index size: the first _ensure makes the arrays, even empty ones
        self._ensure()

    def _ensure(self) -> None:
        cap = self.index.capacity
        if cap <= self.capacity:
            return
        g = grow
        if self.capacity < 0:
            z64 = np.zeros(0, np.int64)
            self.last_seen, self.silent = z64.copy(), np.zeros(0, bool)
            self.battery_level = np.zeros(0, np.int8)
            self.batt_ref_ts, self.batt_ref = z64.copy(), np.zeros(0)
            self.not_worn_count = np.zeros(0, np.int32)
            self.not_worn = np.zeros(0, bool)
            self.last_activity, self.last_steps = z64.copy(), z64.copy()
            self.inactive = np.zeros(0, bool)
        self.last_seen = g(self.last_seen, cap, NEVER)
        self.silent = g(self.silent, cap, False)
        self.battery_level = g(self.battery_level, cap, 0)
        self.batt_ref_ts = g(self.batt_ref_ts, cap, NEVER)
        self.batt_ref = g(self.batt_ref, cap, np.nan)
        self.not_worn_count = g(self.not_worn_count, cap, 0)
        self.not_worn = g(self.not_worn, cap, False)
        self.last_activity = g(self.last_activity, cap, NEVER)
        self.last_steps = g(self.last_steps, cap, -1)
        self.inactive = g(self.inactive, cap, False)
        self.capacity = cap

    def _emit(
        self,
        out: list[Detection],
        slot: int,
        kind: str,
        severity: Severity,
        ts: int,
        evidence: dict[str, object],
        cleared: bool = False,
    ) -> None:
        e = int(self.index.elder_of_slot[slot])
        out.append(
            Detection(
                self.index.elder_ids[e] if e >= 0 else None,
                self.index.device_ids[slot],
                kind,
                severity,
                ts,
                evidence,
                cleared,
            )
        )

    def seen(self, slots: NDArray[np.int64], received_ms: int, out: list[Detection]) -> None:
        """Any message from these devices: they are not silent."""
        self._ensure()
        self.last_seen[slots] = received_ms
        first = self.last_activity[slots] == NEVER
        self.last_activity[slots[first]] = received_ms
        back = np.unique(slots[self.silent[slots]])
        for slot in back:
            self._emit(out, int(slot), DEVICE_SILENT, "warning", received_ms, {"reporting_again": True}, cleared=True)
        self.silent[back] = False

    def offline(self, slot: int, ts_ms: int, out: list[Detection]) -> None:
        """The broker published the device's will: its connection is gone."""
        self._ensure()
        if not self.silent[slot]:
            self.silent[slot] = True
            self._emit(out, slot, DEVICE_SILENT, "warning", ts_ms, {"source": "will message"})

    def battery(
        self, slots: NDArray[np.int64], ts: NDArray[np.int64], pct: NDArray[np.float64], out: list[Detection]
    ) -> None:
        """One round of battery readings (each slot once)."""
        self._ensure()
        s = self.s
        level = np.where(pct <= s.battery_critical_pct, 2, np.where(pct <= s.battery_warning_pct, 1, 0))
        ref, ref_ts = self.batt_ref[slots], self.batt_ref_ts[slots]
        # a rising level means charging: restart the slope from here
        restart = np.isnan(ref) | (pct > ref) | (ts - ref_ts > 12 * 3_600_000)
        span = ts - ref_ts
        slope = np.where(~restart & (span >= MIN_SLOPE_SPAN_MS), (pct - ref) / np.maximum(span, 1), np.nan)
        self.batt_ref[slots] = np.where(restart, pct, ref)
        self.batt_ref_ts[slots] = np.where(restart, ts, ref_ts)
        current = self.battery_level[slots]
        fire = level > current
        clear = (current > 0) & (pct >= s.battery_clear_pct)
        for i in np.flatnonzero(fire | clear):
            evidence: dict[str, object] = {"battery_pct": float(pct[i])}
            if slope[i] < 0:
                evidence["hours_left"] = round(float(pct[i] / -slope[i] / 3_600_000), 1)
            worst = current[i] if clear[i] else level[i]
            self._emit(
                out,
                int(slots[i]),
                LOW_BATTERY,
                "critical" if worst == 2 else "warning",
                int(ts[i]),
                evidence,
                cleared=bool(clear[i]),
            )
        self.battery_level[slots] = np.where(clear, 0, np.where(fire, level, current))

    def worn(
        self, slots: NDArray[np.int64], ts: NDArray[np.int64], worn: NDArray[np.bool_], out: list[Detection]
    ) -> None:
        self._ensure()
        count = np.where(worn, 0, self.not_worn_count[slots] + 1)
        self.not_worn_count[slots] = count
        state = self.not_worn[slots]
        fire = ~state & (count >= self.s.not_worn_readings)
        clear = state & worn
        for i in np.flatnonzero(fire | clear):
            self._emit(
                out,
                int(slots[i]),
                NOT_WORN,
                "warning",
                int(ts[i]),
                {"readings_not_worn": int(count[i])},
                cleared=bool(clear[i]),
            )
        self.not_worn[slots] = (state | fire) & ~clear

    def activity(
        self, slots: NDArray[np.int64], ts: NDArray[np.int64], steps: NDArray[np.int64], out: list[Detection]
    ) -> None:
        """Steps rising is activity; a drop is the midnight reset, not activity."""
        self._ensure()
        last = self.last_steps[slots]
        active = (last >= 0) & (steps > last)
        self.last_steps[slots] = steps
        moved = slots[active]
        self.last_activity[moved] = np.maximum(self.last_activity[moved], ts[active])
        self.moved(moved, ts[active], out)

    def moved(self, slots: NDArray[np.int64], ts: NDArray[np.int64], out: list[Detection]) -> None:
        self._ensure()
        self.last_activity[slots] = np.maximum(self.last_activity[slots], ts)
        back = self.inactive[slots]
        for i in np.flatnonzero(back):
            self._emit(out, int(slots[i]), INACTIVITY, "warning", int(ts[i]), {"moving_again": True}, cleared=True)
        self.inactive[slots[back]] = False

    def tick(self, now_ms: int, out: list[Detection]) -> None:
        self._ensure()
        n = len(self.index.device_ids)
        seen = self.last_seen[:n]
        limit = (self.index.interval_ms[:n] * self.s.silent_factor).astype(np.int64)
        silent = (seen != NEVER) & (now_ms - seen > limit) & ~self.silent[:n]
        for slot in np.flatnonzero(silent):
            self._emit(
                out,
                int(slot),
                DEVICE_SILENT,
                "warning",
                now_ms,
                {
                    "silent_for_s": round((now_ms - int(seen[slot])) / 1000, 1),
                    "limit_s": round(int(limit[slot]) / 1000, 1),
                },
            )
        self.silent[:n] |= silent
        self._inactivity(now_ms, n, out)

    def _inactivity(self, now_ms: int, n: int, out: list[Detection]) -> None:
        start, end = self.s.day_window
        minute = int(minute_of_day(np.array([now_ms]), self.s.timezone_offset_min)[0])
        if not start <= minute < end:
            return
        elders = self.index.elder_of_slot[:n]
        alone = self.index.lives_alone[elders] & (elders >= 0)
        is_band = np.array([t == "wristband" for t in self.index.device_types], bool)
        still = now_ms - self.last_activity[:n] > self.s.inactivity_hours * 3_600_000
        due = (
            alone
            & is_band
            & still
            & (self.last_activity[:n] != NEVER)
            & ~self.inactive[:n]
            & ~self.silent[:n]
            & ~self.not_worn[:n]
        )
        for slot in np.flatnonzero(due):
            self._emit(
                out,
                int(slot),
                INACTIVITY,
                "warning",
                now_ms,
                {"hours_without_movement": round((now_ms - int(self.last_activity[slot])) / 3.6e6, 1)},
            )
        self.inactive[:n] |= due

    def bytes_per_device(self) -> int:
        return sum(
            a.itemsize
            for a in (
                self.last_seen,
                self.silent,
                self.battery_level,
                self.batt_ref_ts,
                self.batt_ref,
                self.not_worn_count,
                self.not_worn,
                self.last_activity,
                self.last_steps,
                self.inactive,
            )
        )
