"""Vital signs against per-elder thresholds, vectorised over a batch.

Continuous measurements (heart rate, SpO2 from the band) alert only when the
abnormal band persists: ``persistence_readings`` consecutive readings, or at least
two over ``persistence_span_s``. Persistence is counted per severity level, so a
warning that turns critical escalates. Spot measurements (glucose, cuff) alert on a
single reading. ``clear_readings`` normal readings after an alert clear it.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from gateway.detect.index import DetectSettings, DeviceIndex, grow
from gateway.domain.clinical import CONTINUOUS_METRICS, DEFAULT_RULES, VitalRule
from gateway.domain.detection import LEVEL_SEVERITY, Detection

_OPS: dict[str, Callable[[NDArray[np.float64], NDArray[np.float64]], NDArray[np.bool_]]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">=": operator.ge,
    ">": operator.gt,
}
LEVELS = (1, 2)  # warning, critical

# kind -> the rules (with their column in the threshold table) that feed it
_KIND_RULES: dict[str, list[tuple[int, VitalRule]]] = {}
for _col, _rule in enumerate(DEFAULT_RULES):
    _KIND_RULES.setdefault(_rule.kind, []).append((_col, _rule))
KIND_METRIC: dict[str, str] = {k: rules[0][1].metric for k, rules in _KIND_RULES.items()}


class VitalsDetector:
    def __init__(self, index: DeviceIndex, settings: DetectSettings) -> None:
        self.index = index
        self.s = settings
        self.kinds = list(_KIND_RULES)
        self.capacity = 0
        self.active: dict[str, NDArray[np.int8]] = {}
        self.normal: dict[str, NDArray[np.int32]] = {}
        self.streak: dict[tuple[str, int], NDArray[np.int32]] = {}
        self.start: dict[tuple[str, int], NDArray[np.int64]] = {}
        self.last_ts: dict[str, NDArray[np.int64]] = {}
        self._kinds_cache: dict[frozenset[str], list[str]] = {}
        self._ensure(index.capacity)

    def _ensure(self, capacity: int) -> None:
        if capacity <= self.capacity:
            return
        for kind in self.kinds:
            self.active[kind] = grow(self.active.get(kind, np.zeros(0, np.int8)), capacity, 0)
            self.normal[kind] = grow(self.normal.get(kind, np.zeros(0, np.int32)), capacity, 0)
            for level in LEVELS:
                key = (kind, level)
                self.streak[key] = grow(self.streak.get(key, np.zeros(0, np.int32)), capacity, 0)
                self.start[key] = grow(self.start.get(key, np.zeros(0, np.int64)), capacity, 0)
        for metric in ("hr", "spo2", "glucose", "bp"):
            self.last_ts[metric] = grow(
                self.last_ts.get(metric, np.zeros(0, np.int64)), capacity, np.iinfo(np.int64).min
            )
        self.capacity = capacity

    def levels(self, kind: str, values: dict[str, NDArray[np.float64]], elders: NDArray[np.int64]) -> NDArray[np.int8]:
        """Severity level (0 normal, 1 warning, 2 critical) per row for ``kind``.

        A kind may be fed by several metrics of one measurement (a cuff gives systolic
        and diastolic): the level is the worst over every rule whose metric is given.
        """
        level = np.zeros(len(elders), np.int8)
        for col, rule in _KIND_RULES[kind]:
            if rule.metric not in values:
                continue
            hit = _OPS[rule.op](values[rule.metric], self.index.thresholds[elders, col])
            sev = 2 if rule.severity == "critical" else 1
            level = np.where(hit & (level < sev), sev, level).astype(np.int8)
        return level

    def update(
        self,
        measurement: str,
        slots: NDArray[np.int64],
        ts: NDArray[np.int64],
        values: dict[str, NDArray[np.float64]],
        out: list[Detection],
    ) -> None:
        """One round of one measurement's readings (each slot at most once).

        ``measurement`` names the reading ("hr", "spo2", "glucose", "bp"); ``values``
        holds each metric it carries, row-aligned with ``slots``.
        """
        self._ensure(self.index.capacity)
        fresh = ts >= self.last_ts[measurement][slots]  # an older, late reading changes no state
        if not fresh.all():
            slots, ts = slots[fresh], ts[fresh]
            values = {m: v[fresh] for m, v in values.items()}
        if len(slots) == 0:
            return
        self.last_ts[measurement][slots] = ts
        elders = self.index.elder_of_slot[slots]
        continuous = bool(CONTINUOUS_METRICS & values.keys())
        for kind in self._kinds_for(frozenset(values)):
            level = self.levels(kind, values, elders)
            active = self.active[kind][slots]
            if not level.any() and not active.any():  # the common case: all normal
                if continuous:
                    for lv in LEVELS:
                        self.streak[(kind, lv)][slots] = 0
                continue
            if continuous:
                fire_level = np.zeros(len(slots), np.int8)
                for lv in LEVELS:
                    key = (kind, lv)
                    streak = np.where(level >= lv, self.streak[key][slots] + 1, 0)
                    start = np.where(streak == 1, ts, self.start[key][slots])
                    self.streak[key][slots] = streak
                    self.start[key][slots] = start
                    persisted = (streak >= self.s.persistence_readings) | (
                        (streak >= 2) & (ts - start >= self.s.persistence_span_s * 1000)
                    )
                    fire_level = np.where(persisted, lv, fire_level).astype(np.int8)
            else:
                fire_level = level
            normal = np.where(level == 0, self.normal[kind][slots] + 1, 0)
            self.normal[kind][slots] = normal
            fire = fire_level > active
            clear = (active > 0) & (normal >= (self.s.clear_readings if continuous else 1))
            for i in np.flatnonzero(fire | clear):
                slot = int(slots[i])
                cleared = bool(clear[i])
                severity = LEVEL_SEVERITY[int(active[i] if cleared else fire_level[i])]
                out.append(
                    Detection(
                        elder_id=self._elder_id(slot),
                        device_id=self.index.device_ids[slot],
                        kind=kind,
                        severity=severity,
                        ts_ms=int(ts[i]),
                        evidence={
                            **{m: float(v[i]) for m, v in values.items()},
                            "threshold_rule": self._rule_name(kind, int(fire_level[i])),
                            "persisted_readings": int(self.streak.get((kind, 1), normal)[slot]) if continuous else 1,
                        },
                        cleared=cleared,
                    )
                )
            self.active[kind][slots] = np.where(clear, 0, np.where(fire, fire_level, active))

    def _kinds_for(self, metrics: frozenset[str]) -> list[str]:
        kinds = self._kinds_cache.get(metrics)
        if kinds is None:
            kinds = [k for k, rules in _KIND_RULES.items() if any(r.metric in metrics for _, r in rules)]
            self._kinds_cache[metrics] = kinds
        return kinds

    def _elder_id(self, slot: int) -> str | None:
        e = int(self.index.elder_of_slot[slot])
        return self.index.elder_ids[e] if e >= 0 else None

    @staticmethod
    def _rule_name(kind: str, level: int) -> str | None:
        for _, rule in _KIND_RULES[kind]:
            if (2 if rule.severity == "critical" else 1) == level:
                return rule.name
        return None

    def bytes_per_device(self) -> int:
        total = sum(a.itemsize for a in self.active.values())
        total += sum(a.itemsize for a in self.normal.values())
        total += sum(a.itemsize for a in self.streak.values())
        total += sum(a.itemsize for a in self.start.values())
        total += sum(a.itemsize for a in self.last_ts.values())
        return total
