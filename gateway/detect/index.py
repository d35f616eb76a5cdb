"""Device slots and per-elder arrays shared by every detector.

Per-device state lives in numpy arrays indexed by a slot number; this index gives
each device id a slot (unknown devices get one too, bound to no elder) and holds the
elder-level facts the detectors need as arrays: thresholds, conditions, fences.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from gateway.detect.geo import FenceInput, FenceTable
from gateway.domain.clinical import DEFAULT_RULES
from gateway.domain.registry import ElderSpec, RegistryFile, parse_window

Int = NDArray[np.int64]
A = TypeVar("A", bound=NDArray[Any])


@dataclass(frozen=True, slots=True)
class DetectSettings:
    """Tunable detector parameters (config ``detect`` section)."""

    timezone_offset_min: int = 480  # Asia/Shanghai, no daylight saving
    persistence_readings: int = 3
    persistence_span_s: float = 120.0
    clear_readings: int = 2
    fence_margin_m: float = 25.0
    fence_dwell_readings: int = 2
    fence_dwell_s: float = 60.0
    fence_reentry_readings: int = 2
    fence_clear_accuracy_m: float = 50.0
    gps_max_accuracy_m: float = 500.0
    night_window: tuple[int, int] = (20 * 60, 6 * 60)
    sos_cancel_grace_s: float = 30.0
    fall_confirm_s: float = 60.0
    fall_movement_steps: int = 10
    battery_warning_pct: float = 15.0
    battery_critical_pct: float = 5.0
    battery_clear_pct: float = 20.0
    not_worn_readings: int = 2
    silent_factor: float = 3.0
    inactivity_hours: float = 4.0
    day_window: tuple[int, int] = (8 * 60, 20 * 60)


class DeviceIndex:
    """Slots for devices, arrays for elders; grows when unknown devices appear."""

    def __init__(self, registry: RegistryFile, settings: DetectSettings) -> None:
        self.elders: list[ElderSpec] = list(registry.elders)
        self.elder_ids = [e.id for e in self.elders]
        n = len(self.elders)
        self.slot_of: dict[bytes, int] = {}
        self.device_ids: list[str] = []
        self.device_types: list[str] = []
        self.capacity = 0
        self.elder_of_slot: Int = np.zeros(0, np.int64)
        self.interval_ms: Int = np.zeros(0, np.int64)
        # thresholds: one row per elder plus the defaults as the last row, so an
        # unbound device (elder index -1) reads the defaults.
        defaults = np.array([r.value for r in DEFAULT_RULES])
        self.thresholds = np.tile(defaults, (n + 1, 1))
        rule_col = {r.name: i for i, r in enumerate(DEFAULT_RULES)}
        self.dementia = np.zeros(n + 1, bool)
        self.lives_alone = np.zeros(n + 1, bool)
        fences: list[FenceInput] = []
        for e, elder in enumerate(self.elders):
            for name, value in elder.thresholds.items():
                self.thresholds[e, rule_col[name]] = value
            self.dementia[e] = "dementia" in elder.conditions
            self.lives_alone[e] = elder.lives_alone
            for fence in elder.fences:
                fences.append(
                    FenceInput(
                        fence_id=fence.id,
                        elder_index=e,
                        geojson=fence.geojson,
                        circle=(fence.circle.lat, fence.circle.lon, fence.circle.radius_m) if fence.circle else None,
                        margin_m=settings.fence_margin_m if fence.margin_m is None else fence.margin_m,
                        window=parse_window(fence.active) if fence.active else None,
                        severity_level={"warning": 1, "critical": 2}.get(fence.severity or "", -1),
                    )
                )
        self.fences = FenceTable(fences, n + 1)
        for e, elder in enumerate(self.elders):
            for device in elder.devices:
                self._add(device.id, device.type, e, device.reporting_interval_s)

    def _add(self, device_id: str, device_type: str, elder: int, interval_s: int) -> int:
        slot = len(self.device_ids)
        if slot >= self.capacity:
            self._grow(max(1024, self.capacity * 2))
        self.slot_of[device_id.encode()] = slot
        self.device_ids.append(device_id)
        self.device_types.append(device_type)
        self.elder_of_slot[slot] = elder
        self.interval_ms[slot] = interval_s * 1000
        return slot

    def _grow(self, capacity: int) -> None:
        extra = capacity - self.capacity
        self.elder_of_slot = np.concatenate([self.elder_of_slot, np.full(extra, -1, np.int64)])
        self.interval_ms = np.concatenate([self.interval_ms, np.full(extra, 60_000, np.int64)])
        self.capacity = capacity

    def slots(self, device_ids: NDArray[np.object_], device_type: str | None = None) -> Int:
        """Slot per row, giving unknown devices a slot bound to no elder."""
        out = np.fromiter(map(self.slot_of.get, device_ids.tolist(), repeat(-1)), np.int64, len(device_ids))
        if (out < 0).any():
            for i in np.flatnonzero(out < 0):
                key = device_ids[i]
                slot = self.slot_of.get(key)
                if slot is None:
                    slot = self._add(key.decode(), device_type or "unknown", -1, 60)
                out[i] = slot
        return out


def all_distinct(keys: Int) -> bool:
    """Whether no key repeats, in O(n): each key's last writer must be itself."""
    n = len(keys)
    if n < 2:
        return True
    top = int(keys.max()) + 1
    if top > 64 * n + 1_000_000:
        return bool(np.unique(keys).size == n)
    mark = np.empty(top, np.int64)
    positions = np.arange(n)
    mark[keys] = positions
    return bool((mark[keys] == positions).all())


def rounds(keys: Int, ts: Int) -> list[NDArray[np.intp]]:
    """Row indices split so each key appears once per round, in time order.

    Detectors update per-key state with fancy indexing, which is only correct when a
    key occurs once per update; a batch rarely holds two readings of one device, so
    there is usually one round.
    """
    n = len(keys)
    if n == 0:
        return []
    if all_distinct(keys):  # each key once: order does not matter
        return [np.arange(n)]
    order = np.lexsort((ts, keys))
    k = keys[order]
    first = np.ones(n, bool)
    first[1:] = k[1:] != k[:-1]
    if first.all():
        return [order]
    start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    rank = np.arange(n) - start
    return [order[rank == r] for r in range(int(rank.max()) + 1)]


def minute_of_day(ts_ms: Int, offset_min: int) -> Int:
    return ((ts_ms // 60_000) + offset_min) % 1440


def grow(arr: A, capacity: int, fill: object) -> A:
    """``arr`` extended to ``capacity`` entries with ``fill``."""
    if len(arr) >= capacity:
        return arr
    extra = np.full(capacity - len(arr), fill, dtype=arr.dtype)
    return np.concatenate([arr, extra])  # type: ignore[return-value]
