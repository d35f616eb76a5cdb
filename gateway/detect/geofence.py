"""Geofence exit and re-entry per elder, with hysteresis, dwell and time windows.

State is per fence (a fence belongs to one elder): how many consecutive fixes were
outside evidence and since when, how many were inside evidence, and whether an exit
is open. A fix in the margin band between the shrunk and grown fence is neither, so
GPS jitter along the boundary cannot toggle the state: one exit, not a stream.
An exit fires only while the fence is active (its time window); it is critical when
the fence says so, or for an elder with dementia during the night window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from gateway.detect.index import DetectSettings, DeviceIndex, minute_of_day, rounds
from gateway.domain.detection import GEOFENCE_EXIT, LEVEL_SEVERITY, Detection


@dataclass(frozen=True, slots=True)
class _Pairs:
    """One entry per (fix, fence of its elder): which fence, which fix, and how it classified."""

    fence: NDArray[np.int64]
    row: NDArray[np.int64]  # index into the fixes
    ts: NDArray[np.int64]
    minute: NDArray[np.int64]  # local minute of day
    outside: NDArray[np.bool_]
    inside: NDArray[np.bool_]
    beyond: NDArray[np.float64]  # metres outside the fence
    active: NDArray[np.bool_]  # the fence's time window holds


@dataclass(frozen=True, slots=True)
class _Fixes:
    slots: NDArray[np.int64]
    lat: NDArray[np.float64]
    lon: NDArray[np.float64]
    accuracy: NDArray[np.float64]


class GeofenceDetector:
    def __init__(self, index: DeviceIndex, settings: DetectSettings) -> None:
        self.index = index
        self.s = settings
        n = len(index.fences)
        self.out_count = np.zeros(n, np.int32)
        self.out_start = np.zeros(n, np.int64)
        self.in_count = np.zeros(n, np.int32)
        self.exited = np.zeros(n, bool)
        self.last_ts = np.full(n, np.iinfo(np.int64).min, np.int64)

    def process(
        self,
        slots: NDArray[np.int64],
        ts: NDArray[np.int64],
        lat: NDArray[np.float64],
        lon: NDArray[np.float64],
        accuracy: NDArray[np.float64],
        out: list[Detection],
    ) -> None:
        fences = self.index.fences
        if len(fences) == 0 or len(slots) == 0:
            return
        elders = self.index.elder_of_slot[slots]
        count = fences.count[elders]
        usable = (elders >= 0) & (count > 0) & (accuracy <= self.s.gps_max_accuracy_m)
        if not usable.any():
            return
        rows = np.flatnonzero(usable)
        # one pair per (reading, fence of its elder)
        reps = count[rows]
        pair_row = np.repeat(rows, reps)
        offsets = np.arange(len(pair_row)) - np.repeat(np.cumsum(reps) - reps, reps)
        pair_fence = fences.start[elders[pair_row]] + offsets
        outside, inside, beyond = fences.classify(
            pair_fence,
            lat[pair_row],
            lon[pair_row],
            accuracy[pair_row],
            self.s.fence_clear_accuracy_m,
        )
        pair_ts = ts[pair_row]
        minute = minute_of_day(pair_ts, self.s.timezone_offset_min)
        pairs = _Pairs(
            pair_fence, pair_row, pair_ts, minute, outside, inside, beyond, fences.active(pair_fence, minute)
        )
        fixes = _Fixes(slots, lat, lon, accuracy)
        for idx in rounds(pair_fence, pair_ts):
            self._step(idx, pairs, fixes, out)

    def _step(self, idx: NDArray[np.intp], pairs: _Pairs, fixes: _Fixes, out: list[Detection]) -> None:
        f = pairs.fence[idx]
        t = pairs.ts[idx]
        fresh = t >= self.last_ts[f]
        idx, f, t = idx[fresh], f[fresh], t[fresh]
        if len(idx) == 0:
            return
        self.last_ts[f] = t
        o, i = pairs.outside[idx], pairs.inside[idx]
        out_count = np.where(o, self.out_count[f] + 1, np.where(i, 0, self.out_count[f]))
        out_start = np.where(o & (out_count == 1), t, self.out_start[f])
        in_count = np.where(i, self.in_count[f] + 1, np.where(o, 0, self.in_count[f]))
        exited = self.exited[f]
        fire = (
            ~exited
            & o
            & pairs.active[idx]
            & (out_count >= self.s.fence_dwell_readings)
            & (t - out_start >= self.s.fence_dwell_s * 1000)
        )
        clear = exited & i & (in_count >= self.s.fence_reentry_readings)
        self.out_count[f] = out_count
        self.out_start[f] = out_start
        self.in_count[f] = in_count
        self.exited[f] = (exited | fire) & ~clear
        if not (fire.any() or clear.any()):
            return
        fences = self.index.fences
        night_start, night_end = self.s.night_window
        for j in np.flatnonzero(fire | clear):
            fence = int(f[j])
            row = int(pairs.row[idx[j]])
            slot = int(fixes.slots[row])
            elder = int(fences.elder[fence])
            m = int(pairs.minute[idx[j]])
            at_night = (
                (m >= night_start or m < night_end) if night_start > night_end else (night_start <= m < night_end)
            )
            level = int(fences.severity_level[fence])
            if level < 0:
                level = 2 if (self.index.dementia[elder] and at_night) else 1
            out.append(
                Detection(
                    elder_id=self.index.elder_ids[elder],
                    device_id=self.index.device_ids[slot],
                    kind=GEOFENCE_EXIT,
                    severity=LEVEL_SEVERITY[level],
                    ts_ms=int(t[j]),
                    evidence={
                        "fence": fences.ids[fence],
                        "lat": float(fixes.lat[row]),
                        "lon": float(fixes.lon[row]),
                        "accuracy_m": float(fixes.accuracy[row]),
                        "metres_outside": round(float(pairs.beyond[idx[j]]), 1),
                        "outside_fixes": int(out_count[j]),
                        "at_night": at_night,
                        "outside_since_ms": int(out_start[j]),
                    },
                    cleared=bool(clear[j]),
                )
            )

    def bytes_per_fence(self) -> int:
        return sum(a.itemsize for a in (self.out_count, self.out_start, self.in_count, self.exited, self.last_ts))
